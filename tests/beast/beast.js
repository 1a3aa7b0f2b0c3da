'use strict';
// Drives examples/beast (a Boost.Beast server embedding libwsgw) with npm `ws` clients; run by
// tests/beast/run.sh, which builds it out of tree against an installed libwsgw.
//
// Usage: node tests/beast/beast.js PATH/TO/beast
//
// Checks, each through the example's own interfaces only (WebSocket clients, the stdin commands,
// the JSON event lines on its stdout):
//   1. tags from the query string, in the open event; bad queries and the tag key id get HTTP 400
//   2. send text and binary by selector (tags, id=..., *): exactly the selected clients get it
//   3. settags (and id refused), then selecting by the new tags
//   4. client messages (text, binary) become message events with the connection's tags
//   5. close with code and reason reaches the client; its close event is published
//   6. slow consumers: close (1008), drop_newest (the answer counts 0), drop_oldest (in order)
//   7. backpressure: stdout unread -> "# reads paused", reads stop; read again -> every event
//   8. SIGTERM: clients get 1001 "going away", their close events are flushed, exit status 0
// Exit status: 0 passed, 1 failed.

const { spawn } = require('node:child_process');
const assert = require('node:assert/strict');
const path = require('node:path');

const WebSocket = require(path.join(__dirname, '..', 'node', 'node_modules', 'ws'));

const bin = process.argv[2];
const variant = process.env.WSGW_BEAST_VARIANT || 'plain';
const SLOW = variant === 'plain' ? 1 : 3;
const label = `beast (${variant})`;
const log = (msg) => console.error(`${label}: ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `probe` until it returns a truthy value; that value, or an error naming `what`.
async function until(probe, ms, what) {
  const deadline = Date.now() + ms * SLOW;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms * SLOW} ms: ${what}`);
    await sleep(20);
  }
}

const servers = new Set();
process.on('exit', () => {
  for (const s of servers) if (s.exit === undefined) s.proc.kill('SIGKILL');
});

// One running example: events (its stdout, parsed), answers and notices (its stderr).
class Server {
  static async start(args) {
    const s = new Server();
    s.proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    servers.add(s);
    s.events = [];
    s.notices = [];
    s.stderr = [];
    s.waiting = [];
    s.exited = new Promise((resolve) =>
      s.proc.on('exit', (code, signal) => {
        s.exit = { code, signal };
        resolve(s.exit);
      }),
    );
    lines(s.proc.stdout, (l) => s.events.push(JSON.parse(l)));
    lines(s.proc.stderr, (l) => {
      s.stderr.push(l);
      if (l.startsWith('= ') || l.startsWith('! ')) s.waiting.shift()(l);
      else if (l.startsWith('# ')) s.notices.push(l);
    });
    const listening = await until(() => s.notices.find((n) => n.startsWith('# listening on ')) || s.exit, 10000,
      'the example says "# listening on PORT"');
    assert.ok(typeof listening === 'string', `the example exited: ${JSON.stringify(s.exit)}\n${s.stderr.join('\n')}`);
    s.port = Number(listening.split(' ').pop());
    return s;
  }
  // One stdin command; its answer line ("= N" or "! why").
  cmd(line) {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.proc.stdin.write(line + '\n');
    });
  }
  async count(line) {
    const a = await this.cmd(line);
    assert.match(a, /^= \d+$/, `${line} -> ${a}`);
    return Number(a.slice(2));
  }
  async stats() {
    const a = await this.cmd('stats');
    return Object.fromEntries(a.slice(2).split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
  }
  url(pathAndQuery) {
    return `ws://127.0.0.1:${this.port}${pathAndQuery}`;
  }
  // The first event matching `pred`, waited for.
  event(pred, what) {
    return until(() => this.events.find(pred), 5000, what);
  }
  async stop() {
    this.proc.kill('SIGTERM');
    return Promise.race([this.exited, sleep(20000 * SLOW).then(() => ({ timedOut: true }))]);
  }
}

function lines(stream, onLine) {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
}

// A `ws` client that records what it receives and how it was closed.
async function client(server, pathAndQuery) {
  const ws = new WebSocket(server.url(pathAndQuery));
  ws.got = [];
  ws.on('message', (data, isBinary) => ws.got.push({ data, isBinary }));
  ws.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return ws;
}

// The HTTP status and body an upgrade is refused with.
function refused(server, pathAndQuery) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(server.url(pathAndQuery));
    ws.on('open', () => reject(new Error(`${pathAndQuery} was accepted`)));
    ws.on('error', () => {});
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
  });
}

const uniq = (p) => `${p}${Math.random().toString(16).slice(2, 10)}`;
const texts = (ws) => ws.got.map((m) => m.data.toString());

async function features() {
  const s = await Server.start(['--shards', '2', '--include', 'group,user', '--max-bytes', '65536']);
  const g = uniq('g');
  // 1. Tags from the query string; the open event carries the included ones.
  const a = await client(s, `/chat?group=${g}&user=a&role=x`);
  const b = await client(s, `/chat?group=${g}&user=b`);
  const c = await client(s, `/other?group=${g}-2&user=c`);
  const openA = await s.event((e) => e.action === 'open' && e.tags === `group=${g}&user=a`, 'open event of a');
  assert.equal(openA.endpoint, '/chat');
  await s.event((e) => e.action === 'open' && e.tags === `group=${g}-2&user=c` && e.endpoint === '/other', 'open of c');
  let r = await refused(s, '/chat?id=abc');
  assert.equal(r.status, 400);
  assert.match(r.body, /tag key 'id' is reserved/);
  r = await refused(s, '/chat?a=%zz');
  assert.equal(r.status, 400);
  assert.match(r.body, /bad query string/);

  // 2. Selector sends, text and binary.
  assert.equal(await s.count(`send group=${g} hello group`), 2);
  assert.equal(await s.count(`send group=${g}&user=b only b`), 1);
  assert.equal(await s.count(`send id=${openA.connection} only a by id`), 1);
  assert.equal(await s.count('sendb user=c 00ff10'), 1);
  await until(() => a.got.length === 2 && b.got.length === 2 && c.got.length === 1, 3000, 'the sends arrive');
  assert.deepEqual(texts(a), ['hello group', 'only a by id']);
  assert.deepEqual(texts(b), ['hello group', 'only b']);
  assert.equal(c.got[0].isBinary, true);
  assert.deepEqual([...c.got[0].data], [0x00, 0xff, 0x10]);
  assert.equal(a.got[0].isBinary, false);
  assert.ok((await s.count('send * to everyone')) >= 3);
  assert.match(await s.cmd('send a=%zz x'), /^! selector/);

  // 3. settags, then select by the new tags; the key id is refused.
  assert.equal(await s.count(`settags user=a role=admin&group=${g}-admins`), 1);
  assert.match(await s.cmd('settags user=a id=x'), /^! tag key 'id' is reserved/);
  assert.equal(await s.count(`send group=${g}-admins&role=admin for admins`), 1);
  assert.equal(await s.count(`send group=${g} not a any more`), 1);
  await until(() => texts(a).includes('for admins') && texts(b).includes('not a any more'), 3000, 'tagged sends');
  assert.ok(!texts(a).includes('not a any more'));

  // 4. Client messages become events with the connection's (current) tags.
  a.send('from a');
  c.send(Buffer.from([1, 2, 3]));
  const ma = await s.event((e) => e.action === 'message' && e.message === 'from a', 'message event of a');
  assert.equal(ma.type, 'text');
  assert.equal(ma.tags, `group=${g}-admins&user=a`);
  const mc = await s.event((e) => e.action === 'message' && e.tags === `group=${g}-2&user=c`, 'message of c');
  assert.equal(mc.type, 'binary');
  assert.equal(Buffer.from(mc.message, 'base64').toString('hex'), '010203');

  // 5. Close with code and reason; the close event follows.
  assert.equal(await s.count('close user=b 4001 bye now, b'), 1);
  assert.deepEqual(await b.closed, { code: 4001, reason: 'bye now, b' });
  await s.event((e) => e.action === 'close' && e.tags === `group=${g}&user=b`, 'close event of b');

  // 6a. A client that stops reading is closed with 1008 once its queue passes 64 KiB; a client
  // that reads meanwhile gets everything.
  const slow = await client(s, `/chat?group=${g}-slow&user=slow`);
  const fast = await client(s, `/chat?group=${g}-slow&user=fast`);
  slow._socket.pause();
  const chunk = 'x'.repeat(16 * 1024);
  let sent = 0;
  let cut = false;
  for (let i = 0; i < 3000 && !cut; ++i) {
    cut = (await s.count(`send group=${g}-slow ${chunk}`)) === 1;
    ++sent;
  }
  assert.ok(cut, 'the slow client was never cut off');
  await until(() => fast.got.length === sent, 10000, `the fast client gets all ${sent}`);
  slow._socket.resume();
  const closedSlow = await slow.closed;
  assert.equal(closedSlow.code, 1008);
  assert.match(closedSlow.reason, /^slow consumer/);
  assert.equal((await s.stats()).errors, 0);

  // 8. SIGTERM: every client is closed with 1001, the close events are written, exit 0.
  const open = [a, c, fast];
  const exit = await s.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, `exit: ${JSON.stringify(exit)}\n${s.stderr.join('\n')}`);
  for (const ws of open) assert.deepEqual(await ws.closed, { code: 1001, reason: 'going away' });
  const closes = s.events.filter((e) => e.action === 'close').length;
  assert.equal(closes, s.events.filter((e) => e.action === 'open').length, 'a close event for every open one');
  log(`features: ok (${s.events.length} events, slow consumer cut after ${sent} sends)`);
}

// 6b. drop_newest and drop_oldest keep the connection, drop what does not fit, keep the order.
async function dropPolicies() {
  for (const policy of ['drop_newest', 'drop_oldest']) {
    const s = await Server.start(['--shards', '1', '--max-bytes', '65536', '--policy', policy]);
    const slow = await client(s, '/chat?user=slow');
    slow._socket.pause();
    const chunk = 'x'.repeat(16 * 1024);
    let accepted = 0;
    let attempted = 0;
    for (let i = 0; i < 800; ++i, ++attempted) accepted += await s.count(`send user=slow ${100000 + i} ${chunk}`);
    assert.equal(await s.count('send user=slow last-one'), 1);
    slow._socket.resume();
    await until(() => slow.got.length && slow.got[slow.got.length - 1].data.toString() === 'last-one', 20000,
      `${policy}: the last message arrives`);
    const seq = slow.got.slice(0, -1).map((m) => Number(m.data.toString().slice(0, 6)));
    for (let i = 1; i < seq.length; ++i) assert.ok(seq[i - 1] < seq[i], `${policy}: in order`);
    assert.ok(seq.length < attempted, `${policy}: something was dropped (${seq.length} of ${attempted} arrived)`);
    if (policy === 'drop_newest') {
      assert.equal(seq.length, accepted, 'drop_newest: exactly the sends answered 1 arrive');
      assert.ok(accepted < attempted);
    } else {
      assert.equal(accepted, attempted, 'drop_oldest: every send is queued, older ones make room');
      assert.equal(seq[seq.length - 1], 100000 + attempted - 1, 'drop_oldest: the newest is kept');
    }
    assert.equal(slow.readyState, WebSocket.OPEN);
    slow.close();
    await slow.closed;
    assert.equal((await s.stop()).code, 0);
    log(`${policy}: ok (${seq.length} of ${attempted} delivered)`);
  }
}

// 7. Backpressure: with stdout unread the log sink blocks, its backlog passes --backlog, and
// the server stops reading from clients until it drains.
async function backpressure() {
  const s = await Server.start(['--shards', '2', '--backlog', '20']);
  const ws = await client(s, '/chat?user=p');
  await s.event((e) => e.action === 'open', 'open event');
  s.proc.stdout.pause();
  const N = 3000;
  const pad = 'y'.repeat(200);
  for (let i = 0; i < N; ++i) ws.send(`${100000 + i} ${pad}`);
  await until(() => s.notices.includes('# reads paused'), 10000, 'the example pauses reading');
  const before = await s.stats();
  assert.equal(before.paused, 1);
  await sleep(300 * SLOW);
  const after = await s.stats();
  assert.ok(before.read < N, `reads stopped before all ${N} (read ${before.read})`);
  assert.ok(after.read - before.read <= 1, `no reads while paused (${before.read} then ${after.read})`);
  s.proc.stdout.resume();
  await until(() => s.notices.includes('# reads resumed'), 10000, 'the example resumes reading');
  await until(() => s.events.filter((e) => e.action === 'message').length === N, 20000, `all ${N} message events`);
  const seq = s.events.filter((e) => e.action === 'message').map((e) => Number(e.message.slice(0, 6)));
  seq.forEach((v, i) => assert.equal(v, 100000 + i, 'every message event, in order'));
  assert.equal((await s.stats()).read, N);
  ws.close(1000);
  await ws.closed;
  assert.equal((await s.stop()).code, 0);
  log(`backpressure: ok (paused after ${before.read} of ${N} reads)`);
}

(async () => {
  await features();
  await dropPolicies();
  await backpressure();
  log('all checks passed');
})().catch((e) => {
  // The servers' last words first and the failure last: meson prints only the end of a
  // failing test's output.
  for (const s of servers) log(`stderr of a server:\n${s.stderr.slice(-20).join('\n')}`);
  log(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
