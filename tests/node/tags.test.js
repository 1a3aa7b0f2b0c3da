'use strict';
// POST /settags (add, change, delete) seen through GET /status and GET /tree, text and JSON.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EP, connectTagged, closeAll, control, count, selector, statusJson, uniq } = require('./lib/gw');

const T = { timeout: 20000 };

async function statusText(query) {
  const r = await control('GET', `/status?${query}`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain/);
  return r.text;
}

// The text /status line wsgwd writes for a connection: "id=<id> k=v k=v" with keys in order.
const statusLine = (id, tags) =>
  `id=${id}` +
  Object.keys(tags)
    .sort()
    .map((k) => ` ${k}=${tags[k]}`)
    .join('');

// GET /tree as text, parsed: key -> [values] in the order written.
async function treeText() {
  const r = await control('GET', '/tree');
  assert.equal(r.status, 200);
  const tree = {};
  let key = null;
  for (const line of r.text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith(' - ')) {
      assert.ok(key !== null, `value line before any key: ${JSON.stringify(line)}`);
      tree[key].push(line.slice(3));
    } else {
      key = line;
      assert.ok(!(key in tree), `key ${key} listed twice`);
      tree[key] = [];
    }
  }
  return tree;
}

async function treeJson() {
  const r = await control('GET', '/tree', { accept: 'application/json' });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  return JSON.parse(r.text);
}

test('settags adds, changes and deletes tags; /status and /tree follow', T, async () => {
  const t = uniq();
  const key = uniq('k'); // a key no other test touches, so its /tree entry is ours alone
  const clients = await connectTagged(EP.compressed, 2, { t });
  const [c1, c2] = clients;
  try {
    const sel = selector({ t });

    // Add: both get key=red and user=alice.
    assert.equal(await count('settags', sel, `${key}=red&user=alice`), 2);
    let text = await statusText(sel);
    assert.equal(text.endsWith('\n'), true);
    const base = { group: 'node', t };
    assert.deepEqual(
      text.trimEnd().split('\n').sort(),
      [
        statusLine(c1.id, { ...base, [key]: 'red', user: 'alice' }),
        statusLine(c2.id, { ...base, [key]: 'red', user: 'alice' }),
      ].sort(),
    );
    assert.deepEqual((await treeText())[key], ['red']);
    assert.deepEqual((await treeJson())[key], { red: 2 });

    // Change one: c1 turns blue.
    assert.equal(await count('settags', `id=${c1.id}`, `${key}=blue`), 1);
    let st = await statusJson(sel);
    assert.equal(st.count, 2);
    const byId = Object.fromEntries(st.connections.map((c) => [c.id, c]));
    assert.deepEqual(byId[c1.id].tags, { ...base, [key]: 'blue', user: 'alice' });
    assert.deepEqual(byId[c2.id].tags, { ...base, [key]: 'red', user: 'alice' });
    assert.deepEqual((await treeText())[key], ['blue', 'red']);
    assert.deepEqual((await treeJson())[key], { blue: 1, red: 1 });
    // Selectors see the change at once.
    assert.equal(await count('send', selector({ [key]: 'blue' }), 'x'), 1);
    assert.equal(await count('send', selector({ [key]: 'red', t }), 'x'), 1);

    // Delete (empty value) on both: the key leaves /status, and /tree drops it entirely.
    assert.equal(await count('settags', sel, `${key}=&user=bob`), 2);
    st = await statusJson(sel);
    for (const c of st.connections) assert.deepEqual(c.tags, { ...base, user: 'bob' });
    text = await statusText(sel);
    assert.deepEqual(
      text.trimEnd().split('\n').sort(),
      [statusLine(c1.id, { ...base, user: 'bob' }), statusLine(c2.id, { ...base, user: 'bob' })].sort(),
    );
    assert.equal(key in (await treeText()), false, 'deleted key still in /tree');
    assert.equal(key in (await treeJson()), false, 'deleted key still in /tree JSON');
    assert.equal(await count('send', selector({ [key]: 'red' }), 'x'), 0);
    assert.equal(await count('send', selector({ [key]: 'blue' }), 'x'), 0);

    // Our t value is in /tree with both connections.
    assert.deepEqual((await treeJson()).t[t], 2);
  } finally {
    await closeAll(clients);
  }
});

test('tag values with reserved characters round-trip through settags, selectors and /status', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.plain, 1, { t });
  const [c] = clients;
  try {
    const value = 'a b&c=d/é+%';
    const body = new URLSearchParams({ odd: value }).toString();
    assert.equal(await count('settags', selector({ t }), body), 1);
    const st = await statusJson(selector({ t }));
    assert.equal(st.connections[0].tags.odd, value);
    // The same value percent-encoded by hand (%20 for space rather than '+').
    const query = `t=${t}&odd=${encodeURIComponent(value)}`;
    assert.equal(await count('send', query, 'hit'), 1);
    assert.equal((await c.message(0)).data.toString(), 'hit');
  } finally {
    await closeAll(clients);
  }
});

test('/status JSON describes each connection; no query lists everyone', T, async () => {
  const t = uniq();
  const a = await connectTagged(EP.compressed, 1, { t });
  const b = await connectTagged(EP.plain, 1, { t });
  const clients = [...a, ...b];
  try {
    const st = await statusJson(selector({ t }));
    assert.equal(st.count, 2);
    assert.equal(st.connections.length, 2);
    for (const c of clients) {
      const info = st.connections.find((x) => x.id === c.id);
      assert.ok(info, `connection ${c.id} missing`);
      assert.match(info.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.equal(info.endpoint, c.path);
      assert.equal(info.remote_addr, `127.0.0.1:${c.localPort}`);
      assert.ok(info.shard === 0 || info.shard === 1, `shard ${info.shard}`);
      assert.deepEqual(info.tags, { group: c.path === EP.plain ? 'plain' : 'node', t });
    }
    const everyone = await statusJson();
    assert.equal(everyone.count, everyone.connections.length);
    for (const c of clients) assert.ok(everyone.connections.some((x) => x.id === c.id));
    // A selector that matches nobody lists nobody.
    assert.equal((await statusText(selector({ t: uniq() }))), '');
  } finally {
    await closeAll(clients);
  }
});

test('a malformed settags body is refused with 400 and changes nothing', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.compressed, 1, { t });
  try {
    const r = await control('POST', `/settags?${selector({ t })}`, { body: 'k=%zz', contentType: 'application/x-www-form-urlencoded' });
    assert.equal(r.status, 400);
    const st = await statusJson(selector({ t }));
    assert.deepEqual(st.connections[0].tags, { group: 'node', t });
  } finally {
    await closeAll(clients);
  }
});
