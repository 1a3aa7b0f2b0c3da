'use strict';
// Many clients over both shards and both endpoints: one broadcast reaches each exactly once.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EP, connectTagged, closeAll, count, selector, statusJson, uniq, until } = require('./lib/gw');

const N = 200;

test(`a broadcast to ${N} clients over two shards reaches each exactly once`, { timeout: 40000 }, async () => {
  const t = uniq();
  const clients = [
    ...(await connectTagged(EP.compressed, N / 2, { t })),
    ...(await connectTagged(EP.plain, N / 2, { t })),
  ];
  try {
    const st = await statusJson(selector({ t }));
    assert.equal(st.count, N);
    assert.equal(new Set(st.connections.map((c) => c.id)).size, N);
    assert.deepEqual([...new Set(st.connections.map((c) => c.shard))].sort(), [0, 1], 'the kernel spreads clients over both shards');
    // Both endpoints per /status.
    assert.equal(st.connections.filter((c) => c.endpoint === EP.plain).length, N / 2);

    // A broadcast, then a marker: per-connection order means once the marker is in, any duplicate
    // of the broadcast would be too.
    assert.equal(await count('send', selector({ t }), 'broadcast'), N);
    assert.equal(await count('send', selector({ t }), 'marker'), N);
    await until(() => clients.every((c) => c.messages.length >= 2), 15000, 'every client got both messages', 50);
    for (const [i, c] of clients.entries())
      assert.deepEqual(c.messages.map((m) => m.data.toString()), ['broadcast', 'marker'], `client ${i} on ${c.path}`);

    // A binary broadcast to one endpoint's half only.
    const bytes = Buffer.from([1, 2, 3, 0, 255]);
    assert.equal(await count('send', selector({ t, group: 'plain' }), bytes, 'application/octet-stream'), N / 2);
    const plain = clients.filter((c) => c.path === EP.plain);
    await until(() => plain.every((c) => c.messages.length >= 3), 15000, 'the /plain half got the binary message', 50);
    for (const c of plain) assert.ok(c.messages[2].isBinary && c.messages[2].data.equals(bytes));

    // /close by tag counts everyone, and everyone gets 1000.
    assert.equal(await count('close', selector({ t })), N);
    const closes = await Promise.all(clients.map((c) => c.closeInfo(10000)));
    assert.ok(closes.every((x) => x.code === 1000 && x.reason === 'Closed by server'));
    for (const c of clients.filter((x) => x.path === EP.compressed)) assert.equal(c.messages.length, 2);
    await until(async () => (await statusJson(selector({ t }))).count === 0, 10000, 'all gone from /status', 100);
  } finally {
    await closeAll(clients);
  }
});
