'use strict';
// POST /close: an optional last message, then close code 1000 "Closed by server".

const test = require('node:test');
const assert = require('node:assert/strict');
const { EP, connectTagged, closeAll, count, events, selector, statusJson, until, uniq } = require('./lib/gw');

const T = { timeout: 20000 };

test('/close with a body: the body arrives, then close 1000 "Closed by server"', T, async () => {
  const t = uniq();
  const a = await connectTagged(EP.compressed, 2, { t, who: 'a' });
  const b = await connectTagged(EP.plain, 1, { t, who: 'b' });
  try {
    assert.equal(await count('close', selector({ t, who: 'a' }), 'goodbye ✓'), 2);
    for (const c of a) {
      const { code, reason } = await c.closeInfo();
      assert.equal(code, 1000);
      assert.equal(reason, 'Closed by server');
      assert.equal(c.messages.length, 1, 'exactly the body before the close');
      assert.equal(c.messages[0].isBinary, false);
      assert.equal(c.messages[0].data.toString('utf8'), 'goodbye ✓');
    }
    // The other one is untouched and still reachable.
    assert.ok(b[0].isOpen);
    assert.equal(await count('send', selector({ t }), 'still here'), 1);
    assert.equal((await b[0].message(0)).data.toString(), 'still here');
    // The closed ones leave the registry, and the log has their close events.
    await until(async () => (await statusJson(selector({ t, who: 'a' }))).count === 0, 5000, 'closed connections leave /status');
    for (const c of a) {
      const ev = await events.find((e) => e.action === 'close' && e.connection === c.id, 5000, `close event of ${c.id}`);
      assert.equal(ev.endpoint, EP.compressed);
    }
  } finally {
    await closeAll([...a, ...b]);
  }
});

test('/close with a binary body sends it as a binary frame first', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.plain, 1, { t });
  const [c] = clients;
  try {
    const bytes = Buffer.from([0xde, 0xad, 0x00, 0xbe, 0xef]);
    assert.equal(await count('close', selector({ t }), bytes, 'application/octet-stream'), 1);
    const { code, reason } = await c.closeInfo();
    assert.deepEqual({ code, reason }, { code: 1000, reason: 'Closed by server' });
    assert.equal(c.messages.length, 1);
    assert.equal(c.messages[0].isBinary, true);
    assert.ok(c.messages[0].data.equals(bytes));
  } finally {
    await closeAll(clients);
  }
});

test('/close without a body: no message, close 1000 "Closed by server"; by id', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.compressed, 3, { t });
  try {
    const [x, y, z] = clients;
    assert.equal(await count('close', `id=${x.id},${z.id}`), 2);
    for (const c of [x, z]) {
      const { code, reason } = await c.closeInfo();
      assert.deepEqual({ code, reason }, { code: 1000, reason: 'Closed by server' });
      assert.equal(c.messages.length, 0);
    }
    assert.ok(y.isOpen);
    await until(async () => (await statusJson(selector({ t }))).count === 1, 5000, 'two of three left /status');
    // Closing again finds nobody.
    assert.equal(await count('close', `id=${x.id},${z.id}`), 0);
    assert.equal(await count('close', selector({ t })), 1);
    assert.equal((await y.closeInfo()).code, 1000);
  } finally {
    await closeAll(clients);
  }
});
