'use strict';
// POST /send: text and binary frames arrive byte for byte, and selectors pick exactly the
// connections they name (AND of tags; id=a,b ignores the rest of the query).

const test = require('node:test');
const assert = require('node:assert/strict');
const { EP, connect, connectTagged, closeAll, control, count, selector, sleep, uniq } = require('./lib/gw');

const T = { timeout: 20000 };

test('a text body arrives as a text frame with the same characters', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.compressed, 1, { t });
  const [c] = clients;
  try {
    const text = 'héllo wörld – 你好 – 🚀 "quotes" & <tags>\n\tend';
    assert.equal(await count('send', selector({ t }), text, 'text/plain; charset=utf-8'), 1);
    const m = await c.message(0);
    assert.equal(m.isBinary, false);
    assert.equal(m.data.toString('utf8'), text);

    // No Content-Type at all is text too.
    assert.equal(await count('send', selector({ t }), 'plain'), 1);
    const m2 = await c.message(1);
    assert.equal(m2.isBinary, false);
    assert.equal(m2.data.toString('utf8'), 'plain');
  } finally {
    await closeAll(clients);
  }
});

test('application/octet-stream arrives as a binary frame with the same bytes', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.plain, 1, { t });
  const [c] = clients;
  try {
    const bytes = Buffer.alloc(256 * 3 + 7);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) & 0xff; // every byte value, NUL and 0xFF too
    assert.equal(await count('send', selector({ t }), bytes, 'application/octet-stream'), 1);
    const m = await c.message(0);
    assert.equal(m.isBinary, true);
    assert.ok(m.data.equals(bytes), 'binary payload differs');

    // The media type is case-insensitive and may carry parameters.
    const small = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    assert.equal(await count('send', selector({ t }), small, 'Application/Octet-Stream; foo=bar'), 1);
    const m2 = await c.message(1);
    assert.equal(m2.isBinary, true);
    assert.ok(m2.data.equals(small));

    // An empty binary message is a message.
    assert.equal(await count('send', selector({ t }), Buffer.alloc(0), 'application/octet-stream'), 1);
    const m3 = await c.message(2);
    assert.equal(m3.isBinary, true);
    assert.equal(m3.data.length, 0);
  } finally {
    await closeAll(clients);
  }
});

test('a text body that is not UTF-8 is refused with 400 and nothing is sent', T, async () => {
  const t = uniq();
  const clients = await connectTagged(EP.compressed, 1, { t });
  const [c] = clients;
  try {
    const r = await control('POST', `/send?${selector({ t })}`, {
      body: Buffer.from([0x61, 0xff, 0xfe, 0x62]),
      contentType: 'text/plain',
    });
    assert.equal(r.status, 400);
    assert.equal(await count('send', selector({ t }), 'after'), 1);
    const m = await c.message(0);
    assert.equal(m.data.toString(), 'after', 'the refused body must not have been delivered');
  } finally {
    await closeAll(clients);
  }
});

test('AND selectors and id= selection reach exactly the selected connections', T, async () => {
  const t = uniq();
  const tags = [
    { t, role: 'a', room: '1' },
    { t, role: 'a', room: '2' },
    { t, role: 'b', room: '1' },
  ];
  const all = [
    ...(await connectTagged(EP.compressed, 1, tags[0])),
    ...(await connectTagged(EP.plain, 1, tags[1])),
    ...(await connectTagged(EP.compressed, 1, tags[2])),
  ];
  const [c1, c2, c3] = all;
  try {
    // One message per selector, with the count wsgwd must answer.
    const cases = [
      [selector({ t }), 3],
      [selector({ t, role: 'a' }), 2],
      [selector({ role: 'a', t }), 2], // order does not matter
      [selector({ t, role: 'a', room: '1' }), 1],
      [selector({ t, room: '1' }), 2],
      [selector({ t, role: 'b', room: '2' }), 0],
      [selector({ t, role: 'nobody' }), 0],
      [selector({ t: uniq() }), 0],
      [`id=${c1.id},${c3.id}&role=nobody&t=nope`, 2], // id= ignores the rest of the query
      [`id=${c2.id}`, 1],
      [`t=${t}&id=${c2.id},00000000-0000-4000-8000-000000000000,not-a-uuid`, 1], // unknown ids select nobody
      [`id=`, 0],
    ];
    for (const [i, [query, expected]] of cases.entries()) {
      assert.equal(await count('send', query, `m${i}`), expected, `/send?${query}`);
    }
    // An empty query selects nobody (it is not a broadcast to everyone).
    assert.equal(await count('send', '', 'to-nobody'), 0);

    // Each client must now hold exactly the messages whose selector matches it, in order.
    const matches = (query, i) => {
      const q = new URLSearchParams(query);
      if (q.has('id')) return q.get('id').split(',').includes(all[i].id);
      return [...q].every(([k, v]) => tags[i][k] === v);
    };
    const want = all.map((_, i) => cases.flatMap(([query], k) => (matches(query, i) ? [`m${k}`] : [])));
    assert.deepEqual(want.map((w) => w.length), [6, 5, 3], 'the table above');
    await Promise.all(all.map((c, i) => c.message(want[i].length - 1)));
    await sleep(200); // anything extra would arrive now
    assert.deepEqual(
      all.map((c) => c.messages.map((m) => m.data.toString())),
      want,
    );
  } finally {
    await closeAll(all);
  }
});
