'use strict';
// permessage-deflate: negotiated on /ws (compression: true), not on /plain (compression: false);
// large compressible messages intact in both directions and really compressed on the wire.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EP, connect, connectTagged, closeAll, count, events, resolveIds, selector, uniq, until } = require('./lib/gw');

const T = { timeout: 30000 };
const MB = 1000 * 1000;

// `size` characters of compressible but not trivial text (a JSON-ish record, numbered).
function bigText(size, seed = 'x') {
  let s = '';
  for (let i = 0; s.length < size; i++) s += `{"seq":${i},"seed":"${seed}","payload":"lorem ipsum dolor sit amet"},`;
  return s.slice(0, size);
}

function bigBinary(size) {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i % 251) ^ ((i >> 12) & 0xff);
  return b;
}

test('/ws negotiates permessage-deflate; /plain does not', T, async () => {
  const on = await connect(EP.compressed);
  const off = await connect(EP.plain);
  const optedOut = await connect(EP.compressed, { perMessageDeflate: false });
  try {
    assert.match(on.extensions, /permessage-deflate/);
    assert.equal(off.extensions, '', 'compression: false must refuse the extension');
    assert.equal(optedOut.extensions, '', 'a client that does not offer it does not get it');
  } finally {
    await closeAll([on, off, optedOut]);
  }
});

test('a 1 MB compressible text message from the backend arrives intact and compressed', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.compressed, 1, { t });
  const [c] = clients;
  try {
    const text = bigText(MB, t);
    const before = c.socket.bytesRead;
    assert.equal(await count('send', selector({ t }), text, 'text/plain'), 1);
    const m = await c.message(0, 10000);
    const wire = c.socket.bytesRead - before;
    assert.equal(m.isBinary, false);
    assert.equal(m.data.length, text.length);
    assert.ok(m.data.toString('utf8') === text, '1 MB text differs');
    assert.ok(wire < MB / 4, `expected a compressed frame, read ${wire} bytes for ${MB}`);
  } finally {
    await closeAll(clients);
  }
});

test('a 1 MB binary message from the backend arrives intact on both endpoints', T, async () => {
  const t = uniq();
  const z = await connectTagged(EP.compressed, 1, { t });
  const p = await connectTagged(EP.plain, 1, { t });
  const clients = [...z, ...p];
  try {
    const bytes = bigBinary(MB);
    const before = clients.map((c) => c.socket.bytesRead);
    assert.equal(await count('send', selector({ t }), bytes, 'application/octet-stream'), 2);
    for (const [i, c] of clients.entries()) {
      const m = await c.message(0, 10000);
      assert.equal(m.isBinary, true);
      assert.ok(m.data.equals(bytes), `1 MB binary differs on ${c.path}`);
      const wire = c.socket.bytesRead - before[i];
      if (c.path === EP.plain) assert.ok(wire >= MB, `uncompressed endpoint read only ${wire} bytes`);
      else assert.ok(wire < MB / 2, `expected compression on ${c.path}, read ${wire} bytes`);
    }
  } finally {
    await closeAll(clients);
  }
});

test('a 1 MB compressible message from the client arrives intact and compressed', T, async () => {
  const t = uniq();
  const c = await connect(EP.compressed);
  try {
    await resolveIds([c]);
    const text = bigText(MB, t);
    const before = c.socket.bytesWritten;
    await c.send(text);
    const ev = await events.find((e) => e.connection === c.id && e.action === 'message', 10000, '1 MB message event');
    assert.equal(ev.type, 'text');
    assert.equal(ev.message.length, text.length);
    assert.ok(ev.message === text, '1 MB text differs in the event log');
    const wire = c.socket.bytesWritten - before;
    assert.ok(wire < MB / 4, `expected the client to compress, wrote ${wire} bytes`);

    // Binary too, then a small text on the same (context-takeover) stream.
    const bytes = bigBinary(MB);
    await c.send(bytes, { binary: true });
    await c.send('after the big ones');
    const mine = () => events.all((e) => e.connection === c.id && e.action === 'message');
    await until(() => mine().length >= 3, 10000, 'three message events');
    const [, bin, small] = mine();
    assert.equal(bin.type, 'binary');
    assert.ok(Buffer.from(bin.message, 'base64').equals(bytes), '1 MB binary differs in the event log');
    assert.equal(small.message, 'after the big ones');
  } finally {
    await c.close();
  }
});

test('many messages in a row over one compressed connection keep their order and content', T, async () => {
  const t = uniq();
  const c = await connect(EP.compressed, {
    perMessageDeflate: { clientNoContextTakeover: true, serverNoContextTakeover: true, threshold: 0 },
  });
  try {
    assert.match(c.extensions, /permessage-deflate/);
    await resolveIds([c]);
    const n = 100;
    await Promise.all(Array.from({ length: n }, (_, i) => c.send(`${t} #${i} ${'abc'.repeat(i)}`)));
    const mine = () => events.all((e) => e.connection === c.id && e.action === 'message');
    await until(() => mine().length >= n, 10000, `${n} message events`);
    assert.deepEqual(
      mine().map((e) => e.message),
      Array.from({ length: n }, (_, i) => `${t} #${i} ${'abc'.repeat(i)}`),
    );

    // And the other way: the backend's messages keep their order.
    for (let i = 0; i < 30; i++) assert.equal(await count('send', `id=${c.id}`, `down ${i} ${'xyz'.repeat(i * 10)}`), 1);
    await c.message(29, 10000);
    assert.deepEqual(
      c.messages.map((m) => m.data.toString()),
      Array.from({ length: 30 }, (_, i) => `down ${i} ${'xyz'.repeat(i * 10)}`),
    );
  } finally {
    await c.close();
  }
});
