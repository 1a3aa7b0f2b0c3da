'use strict';
// The JSON control API (/v1/send, /v1/settags, /v1/close, /v1/count, /v1/connections) with node's
// fetch and npm `ws` clients: every selector clause reaches exactly the connections it names, the
// answers have their documented shape, and malformed requests get a 400 saying what is wrong.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EP, connectTagged, closeAll, control, sleep, uniq } = require('./lib/gw');

const T = { timeout: 30000 };

async function v1(method, path, body) {
  const r = await control(method, path, {
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    contentType: body === undefined ? undefined : 'application/json',
  });
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/, `${method} ${path}: ${r.text}`);
  return { status: r.status, json: JSON.parse(r.text) };
}

const q = (sel) => encodeURIComponent(JSON.stringify(sel));

// Sends a unique text to `sel` and returns which of `clients` got it (by index); the others must
// get nothing within a short wait. Checks the answer's count against the receivers.
async function reached(clients, sel) {
  const text = uniq('msg');
  const before = clients.map((c) => c.messages.length);
  const r = await v1('POST', '/v1/send', { selector: sel, message: text });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const got = [];
  // Every receiver's frame is queued before the answer; give them time to arrive.
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    got.length = 0;
    clients.forEach((c, i) => {
      if (c.messages.slice(before[i]).some((m) => m.data.toString() === text)) got.push(i);
    });
    if (got.length === r.json.count) break;
    await sleep(20);
  }
  await sleep(100); // and nothing more arrives
  got.length = 0;
  clients.forEach((c, i) => {
    if (c.messages.slice(before[i]).some((m) => m.data.toString() === text)) got.push(i);
  });
  assert.equal(r.json.count, got.length, `count ${r.json.count} but ${got.length} received`);
  return got;
}

test('every selector clause reaches exactly its connections', T, async () => {
  const t = uniq();
  // c0: role=admin room=1; c1: role=user room=1; c2: role=user room=2; c3: role=guest (no room)
  const clients = await connectTagged(EP.plain, 4, { t });
  try {
    const tags = [{ role: 'admin', room: '1' }, { role: 'user', room: '1' }, { role: 'user', room: '2' }, { role: 'guest' }];
    for (let i = 0; i < 4; i++) {
      const r = await v1('POST', '/v1/settags', { selector: { ids: [clients[i].id] }, tags: tags[i] });
      assert.equal(r.status, 200);
      assert.equal(r.json.count, 1);
    }
    const mine = { t };
    assert.deepEqual(await reached(clients, { all: { ...mine, role: 'user' } }), [1, 2]);
    assert.deepEqual(await reached(clients, { all: mine, any: { role: ['admin', 'guest'] } }), [0, 3]);
    assert.deepEqual(await reached(clients, { all: mine, not: { role: 'user' } }), [0, 3]);
    assert.deepEqual(await reached(clients, { all: mine, has: ['room'] }), [0, 1, 2]);
    assert.deepEqual(await reached(clients, { ids: [clients[1].id, clients[3].id] }), [1, 3]);
    assert.deepEqual(await reached(clients, { all: mine, exclude_ids: [clients[0].id] }), [1, 2, 3]);
    assert.deepEqual(
      await reached(clients, { all: mine, any: { room: ['1', '2'] }, not: { role: 'admin' }, exclude_ids: [clients[2].id] }),
      [1],
    );
    assert.deepEqual(await reached(clients, { all: mine, any: { role: [] } }), []);

    // count is a dry run: the same numbers, nothing delivered.
    const before = clients.map((c) => c.messages.length);
    let r = await v1('GET', `/v1/count?selector=${q({ all: mine, has: ['room'] })}`);
    assert.equal(r.status, 200);
    assert.equal(r.json.count, 3);
    assert.deepEqual(r.json.nodes.missing, []);
    assert.equal(r.json.nodes.answered.length, 1);
    await sleep(100);
    assert.deepEqual(clients.map((c) => c.messages.length), before);

    // settags through a JSON selector; "" deletes.
    r = await v1('POST', '/v1/settags', { selector: { all: mine, any: { role: ['user'] } }, tags: { room: '' } });
    assert.equal(r.json.count, 2);
    r = await v1('GET', `/v1/count?selector=${q({ all: mine, has: ['room'] })}`);
    assert.equal(r.json.count, 1);

    // binary
    const bytes = Buffer.from([0, 1, 2, 255]);
    const n3 = clients[3].messages.length;
    r = await v1('POST', '/v1/send', { selector: { ids: [clients[3].id] }, message_base64: bytes.toString('base64') });
    assert.equal(r.json.count, 1);
    const bin = await clients[3].message(n3);
    assert.equal(bin.isBinary, true);
    assert.deepEqual(bin.data, bytes);

    // close with a last message, by a clause
    r = await v1('POST', '/v1/close', { selector: { all: mine, all_typo: 1 } });
    assert.equal(r.status, 400);
    r = await v1('POST', '/v1/close', { selector: { all: { ...mine, role: 'guest' } }, message: 'bye' });
    assert.equal(r.json.count, 1);
    const info = await clients[3].closeInfo();
    assert.equal(info.code, 1000);
    assert.equal(clients[3].messages.at(-1).data.toString(), 'bye');
  } finally {
    await closeAll(clients);
  }
});

test('connections: pages by cursor, stable while connections come and go', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.plain, 7, { t });
  const extra = [];
  try {
    const sel = q({ all: { t } });
    const seen = [];
    let cursor = null;
    let pages = 0;
    for (;;) {
      const r = await v1('GET', `/v1/connections?selector=${sel}&limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(r.status, 200, JSON.stringify(r.json));
      pages++;
      for (const c of r.json.connections) {
        assert.equal(c.tags.t, t);
        assert.equal(typeof c.endpoint, 'string');
        assert.match(c.remote_addr, /^127\.0\.0\.1:/);
        assert.equal(typeof c.node, 'string');
        seen.push(c.id);
      }
      assert.ok(r.json.connections.length <= 3);
      if (pages === 1) {
        // Churn after the first page: one listed and one not yet listed leave, two join.
        const listed = clients.find((c) => c.id === r.json.connections[0].id);
        const later = clients.find((c) => !seen.includes(c.id));
        await listed.close();
        await later.close();
        extra.push(...(await connectTagged(EP.plain, 2, { t })));
        await sleep(100);
      }
      cursor = r.json.next_cursor;
      if (cursor === null) break;
      assert.ok(pages < 20, 'too many pages');
    }
    // Ordered by id, none twice, and every connection that stayed open throughout is listed.
    assert.deepEqual([...seen].sort(), seen);
    assert.equal(new Set(seen).size, seen.length);
    const stayed = clients.filter((c) => c.isOpen).map((c) => c.id);
    for (const id of stayed) assert.ok(seen.includes(id), `${id} stayed open and was not listed`);

    // Defaults and bounds.
    let r = await v1('GET', `/v1/connections?selector=${sel}`);
    assert.equal(r.json.connections.length, stayed.length + extra.length);
    assert.equal(r.json.next_cursor, null);
    r = await v1('GET', `/v1/connections?selector=${sel}&limit=0`);
    assert.equal(r.status, 400);
    assert.match(r.json.error, /limit must be a number from 1 to 1000/);
    r = await v1('GET', `/v1/connections?selector=${sel}&cursor=nope`);
    assert.equal(r.status, 400);
    assert.match(r.json.error, /cursor/);
  } finally {
    await closeAll([...clients, ...extra]);
  }
});

test('malformed requests get 400 with what is wrong, and change nothing', T, async () => {
  const cases = [
    ['POST', '/v1/send', 'not json', /the body must be a JSON object/],
    ['POST', '/v1/send', { message: 'x' }, /no selector/],
    ['POST', '/v1/send', { selector: { all: { t: 'x' } } }, /no message/],
    ['POST', '/v1/send', { selector: {}, message: 'x', message_base64: 'eA==' }, /not both/],
    ['POST', '/v1/send', { selector: {}, message_base64: '***' }, /not base64/],
    ['POST', '/v1/send', { selector: { al: {} }, message: 'x' }, /bad selector: al: unknown clause/],
    ['POST', '/v1/send', { selector: { any: { k: 'v' } }, message: 'x' }, /any\.k: expected an array/],
    ['POST', '/v1/send', { selector: { ids: ['nope'] }, message: 'x' }, /ids\[0\]: not a connection id/],
    ['POST', '/v1/send', { selector: [], message: 'x' }, /selector: expected an object/],
    ['POST', '/v1/send', { selector: {}, msg: 'x' }, /unknown field 'msg'/],
    ['POST', '/v1/settags', { selector: {}, tags: 'a=1' }, /tags must be a non-empty object/],
    ['POST', '/v1/settags', { selector: {}, tags: { a: 1 } }, /tags\.a: expected a string/],
    ['POST', '/v1/settags', { selector: { ids: [] }, tags: { id: 'x' } }, /tag key 'id' is reserved/],
    ['GET', `/v1/count?selector=${q({ has: 'k' })}`, undefined, /has: expected an array/],
    ['GET', '/v1/count?selector=%7B', undefined, /not JSON/],
    ['GET', '/v1/count?group=a', undefined, /unknown parameter 'group'/],
  ];
  for (const [method, path, body, want] of cases) {
    const r = await v1(method, path, body);
    assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(r.json)}`);
    assert.match(r.json.error, want);
  }
  const r = await control('GET', '/v1/send');
  assert.equal(r.status, 405);
  assert.equal(r.headers.get('allow'), 'POST');
});
