'use strict';
// The event log on wsgwd's stdout: one JSON object per line for open, message and close.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EP, connect, closeAll, count, events, resolveIds, selector, sleep, uniq, until } = require('./lib/gw');

const T = { timeout: 20000 };

function assertCommon(ev, c, action) {
  assert.equal(typeof ev.event_id, 'number');
  assert.ok(ev.event_id > 0);
  assert.equal(typeof ev.node, 'string');
  assert.ok(ev.node.length > 0);
  assert.equal(ev.connection, c.id);
  assert.equal(ev.action, action);
  assert.equal(ev.endpoint, c.path);
  assert.equal(typeof ev.time, 'number');
  assert.ok(Math.abs(Date.now() - ev.time) < 60000, `time ${ev.time} is not a recent epoch in ms`);
  assert.equal(typeof ev.tags, 'string');
}

test('open, text message and close events carry the right fields and tags', T, async () => {
  const t = uniq();
  const c = await connect(EP.compressed);
  try {
    await resolveIds([c]);
    const open = await events.find((e) => e.connection === c.id && e.action === 'open', 5000, 'open event');
    assertCommon(open, c, 'open');
    assert.equal(open.tags, 'group=node'); // the endpoint's set_tags, filtered by stream_include_tags
    assert.equal('message' in open, false);
    assert.equal('type' in open, false);

    // Tags set later show up in later events: only stream_include_tags (group, user, t), form-encoded.
    assert.equal(await count('settags', `id=${c.id}`, new URLSearchParams({ t, user: 'alice smith', secret: 'x' }).toString()), 1);
    const body = JSON.stringify({ data: { command: 'hello', actionRef: 'r-1' }, text: 'grüße ✓' });
    await c.send(body);
    const msg = await events.find((e) => e.connection === c.id && e.action === 'message', 5000, 'message event');
    assertCommon(msg, c, 'message');
    assert.equal(msg.type, 'text');
    assert.equal(msg.message, body);
    assert.equal('encoding' in msg, false);
    assert.equal(msg.tags, `group=node&t=${t}&user=alice+smith`);
    assert.deepEqual(Object.fromEntries(new URLSearchParams(msg.tags)), { group: 'node', t, user: 'alice smith' });
    assert.ok(msg.event_id > open.event_id, 'event ids grow');

    // A second message is a second event, in order.
    await c.send('second');
    const second = await events.find((e) => e.connection === c.id && e.action === 'message' && e.message === 'second');
    assert.ok(second.event_id > msg.event_id);

    await c.close();
    const closed = await events.find((e) => e.connection === c.id && e.action === 'close', 5000, 'close event');
    assertCommon(closed, c, 'close');
    assert.equal(closed.tags, `group=node&t=${t}&user=alice+smith`);
    assert.ok(closed.event_id > second.event_id);
    // Exactly one open and one close for this connection.
    assert.equal(events.all((e) => e.connection === c.id && e.action === 'open').length, 1);
    assert.equal(events.all((e) => e.connection === c.id && e.action === 'close').length, 1);
  } finally {
    await c.close();
  }
});

test('a binary client message is logged base64-encoded with "encoding":"base64"', T, async () => {
  const t = uniq();
  const c = await connect(EP.plain);
  try {
    await resolveIds([c]);
    assert.equal(await count('settags', `id=${c.id}`, `t=${t}`), 1);
    const lengths = [0, 1, 2, 3, 4, 5, 255, 1000];
    const payloads = lengths.map((n, k) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + k * 7 + 0xf0) & 0xff)));
    for (const p of payloads) await c.send(p, { binary: true });
    const mine = () => events.all((e) => e.connection === c.id && e.action === 'message');
    await until(() => mine().length >= payloads.length, 5000, `${payloads.length} binary message events`);
    const msgs = mine();
    assert.equal(msgs.length, payloads.length);
    msgs.forEach((ev, i) => {
      assertCommon(ev, c, 'message');
      assert.equal(ev.type, 'binary');
      assert.equal(ev.encoding, 'base64');
      assert.equal(ev.message, payloads[i].toString('base64'), `payload of ${lengths[i]} bytes`);
      assert.equal(ev.tags, `group=plain&t=${t}`);
    });
    // A text message on the same connection is not base64.
    await c.send('text again');
    const txt = await events.find((e) => e.connection === c.id && e.message === 'text again');
    assert.equal(txt.type, 'text');
    assert.equal('encoding' in txt, false);
  } finally {
    await c.close();
  }
});

test('messages from many clients each appear once, attributed to their sender', T, async () => {
  const t = uniq();
  const clients = await Promise.all(Array.from({ length: 10 }, (_, i) => connect(i % 2 ? EP.plain : EP.compressed)));
  try {
    await resolveIds(clients);
    await Promise.all(clients.map((c, i) => c.send(`${t} from ${i}`)));
    const ours = () => events.all((e) => e.action === 'message' && e.message.startsWith(`${t} from `));
    await until(() => ours().length >= clients.length, 5000, 'one message event per client');
    await sleep(200); // a duplicate would show up now
    const evs = ours();
    assert.equal(evs.length, clients.length);
    for (const ev of evs) {
      const i = Number(ev.message.split(' ').pop());
      assert.equal(ev.connection, clients[i].id);
      assert.equal(ev.endpoint, clients[i].path);
    }
    // And the backend can answer each one by the id from its event.
    for (const ev of evs) assert.equal(await count('send', selector({ id: ev.connection }), `re: ${ev.message}`), 1);
    await Promise.all(clients.map(async (c, i) => assert.equal((await c.message(0)).data.toString(), `re: ${t} from ${i}`)));
  } finally {
    await closeAll(clients);
  }
});
