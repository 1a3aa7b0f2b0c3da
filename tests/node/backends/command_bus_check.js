'use strict';
// Commands in over a Redis stream, checked with clients we did not write: ioredis as the backend
// (including the README's example backend, redis_backend.js, run as it is) and npm `ws` as the
// WebSocket clients, against two real wsgwd nodes (a cluster) and a real redis-server, all started
// here on free loopback ports and stopped (by PID) whatever happens.
//
// Usage: node command_bus_check.js PATH/TO/wsgwd   (tests/node/backends/run.sh installs the modules)
// Exit: 0 passed, 1 failed, 77 redis-server missing (a failure under CI=true).

const assert = require('node:assert/strict');
const { spawn, execFile, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const Redis = require('ioredis');
const WebSocket = require('ws');

const wsgwd = process.argv[2];
const children = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgw-cmdbus-'));
let failed = false;

function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);

function skip(why) {
  const ci = /^(true|1|yes)$/i.test(process.env.CI || '');
  console.error(`command bus (node): ${ci ? 'FAIL' : 'SKIP'}: ${why}`);
  process.exit(ci ? 1 : 77);
}

function which(name) {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`]).toString().trim();
  } catch (e) {
    return '';
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `pred` every 50 ms until it holds or `ms` passed.
async function eventually(pred, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if (await pred()) return true;
    } catch (e) {
      // not yet
    }
    await sleep(50);
  }
  return false;
}

async function get(port, target, headers = {}) {
  const r = await fetch(`http://127.0.0.1:${port}${target}`, { headers });
  return { status: r.status, body: await r.text() };
}

async function startNode(name, redisUrl) {
  const ws = await freePort();
  const control = await freePort();
  const config = path.join(tmp, `${name}.yml`);
  fs.writeFileSync(config, `node_id: ${name}
listen_addr: 127.0.0.1:${ws}
control_addr: 127.0.0.1:${control}
threads: 2
drain_s: 0
event_log: none
cluster:
  addr: '${redisUrl}'
  heartbeat_ms: 200
  dead_after_ms: 1000
command_redis:
  addr: '${redisUrl}'
endpoints:
  - path: /connect
    set_tags:
      group: default
`);
  const log = fs.openSync(path.join(tmp, `${name}.log`), 'w');
  const child = spawn(wsgwd, ['--config', config], { stdio: ['ignore', 'ignore', log] });
  children.push(child);
  const node = { name, ws, control, child, log: path.join(tmp, `${name}.log`), clients: [] };
  assert.ok(await eventually(async () => (await get(control, '/readyz')).status === 200), `${name} never ready`);
  return node;
}

function connectClient(node) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${node.ws}/connect`);
    const c = { ws, got: [] };
    ws.on('message', (data, isBinary) => c.got.push({ data: Buffer.from(data), isBinary }));
    ws.on('close', (code) => {
      c.closeCode = code;
    });
    ws.on('open', () => resolve(c));
    ws.on('error', reject);
  });
}

// Runs the README's backend as it is and returns the reply it printed.
function readmeBackend(redisUrl, selector, message) {
  return new Promise((resolve, reject) => {
    execFile('node', [path.join(__dirname, 'redis_backend.js'), redisUrl, selector, message], { timeout: 20000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout))));
  });
}

// XADD a command and wait for its reply entry.
async function command(redis, fields) {
  const replyTo = `replies:${crypto.randomUUID()}`;
  await redis.xadd('wsgw:commands', '*', ...fields, 'reply_to', replyTo);
  const res = await redis.xread('BLOCK', 10000, 'STREAMS', replyTo, '0');
  assert.ok(res, `no reply to ${fields.join(' ')}`);
  const f = res[0][1][0][1];
  const out = {};
  for (let i = 0; i < f.length; i += 2) out[f[i]] = f[i + 1];
  return out;
}

async function main() {
  if (!wsgwd || !fs.existsSync(wsgwd)) throw new Error(`usage: node command_bus_check.js PATH/TO/wsgwd`);
  const redisServer = which('redis-server');
  if (!redisServer) skip('redis-server is not installed (Debian package redis-server; scripts/bootstrap installs it)');

  const redisPort = await freePort();
  const redisChild = spawn(redisServer, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', tmp], { stdio: 'ignore' });
  children.push(redisChild);
  const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on('error', () => {}); // refused until redis-server listens: eventually() retries
  assert.ok(await eventually(async () => {
    if (redis.status !== 'ready') await redis.connect();
    return (await redis.ping()) === 'PONG';
  }), 'redis-server never answered');

  const nodes = [await startNode('gw-1', redisUrl), await startNode('gw-2', redisUrl)];
  for (const n of nodes) {
    for (let i = 0; i < 2; ++i) n.clients.push(await connectClient(n));
    assert.ok(await eventually(async () => JSON.parse((await get(n.control, '/nodes', { Accept: 'application/json' })).body).count === 2));
  }
  assert.ok(await eventually(async () => (await get(nodes[0].control, '/status')).body.split('\n').length - 1 === 4));
  const all = nodes.flatMap((n) => n.clients);
  const settle = async () => {
    await sleep(300);
  };

  // 1. The README's backend: one send, the cluster-wide count in its reply.
  const reply = await readmeBackend(redisUrl, 'group=default', 'hello from ioredis');
  assert.equal(reply.count, '4');
  assert.ok(reply.command_id);
  assert.ok(await eventually(() => all.every((c) => c.got.length === 1)));
  await settle();
  for (const c of all) assert.deepEqual(c.got.map((m) => m.data.toString()), ['hello from ioredis']);

  // 2. Binary, with a command_id sent twice: applied once, the second answered as a duplicate.
  const bytes = Buffer.from([0, 255, 1, 2]);
  const first = await command(redis, ['action', 'send', 'selector', 'group=default', 'type', 'binary', 'message', bytes,
    'command_id', 'bin-1']);
  const again = await command(redis, ['action', 'send', 'selector', 'group=default', 'type', 'binary', 'message', bytes,
    'command_id', 'bin-1']);
  assert.equal(first.count, '4');
  assert.equal(again.count, '4');
  assert.equal(again.duplicate, '1');
  assert.ok(await eventually(() => all.every((c) => c.got.length === 2)));
  await settle();
  for (const c of all) {
    assert.equal(c.got.length, 2);
    assert.ok(c.got[1].isBinary);
    assert.ok(c.got[1].data.equals(bytes));
  }

  // 3. settags on one client of gw-2 (by id), then close by the new tag with a last message.
  const status = (await get(nodes[1].control, '/status', { 'X-Wsgw-Scope': 'node' })).body;
  const id = status.split('\n')[0].slice(3, 39);
  const tagged = await command(redis, ['action', 'settags', 'selector', `id=${id}`, 'tags', 'vip=1']);
  assert.equal(tagged.count, '1');
  assert.equal((await get(nodes[0].control, '/status?vip=1')).body, `id=${id} group=default vip=1\n`);
  const closed = await command(redis, ['action', 'close', 'selector', 'vip=1', 'message', 'bye']);
  assert.equal(closed.count, '1');
  assert.ok(await eventually(() => all.some((c) => c.closeCode === 1000)));
  const gone = all.find((c) => c.closeCode === 1000);
  assert.equal(gone.got[gone.got.length - 1].data.toString(), 'bye');

  // 4. Malformed: an error reply, acknowledged, nothing sent.
  const bad = await command(redis, ['action', 'launch', 'selector', 'group=default']);
  assert.match(bad.error, /^unknown action/);
  const badSel = await command(redis, ['action', 'send', 'selector', 'a=%zz', 'message', 'x']);
  assert.match(badSel.error, /^bad selector/);
  assert.ok(await eventually(async () => (await redis.xpending('wsgw:commands', 'wsgw'))[0] === 0));

  // 5. Both nodes stop cleanly on SIGTERM.
  for (const n of nodes) {
    const exited = new Promise((r) => n.child.on('exit', (code) => r(code)));
    n.child.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(10000).then(() => 'timeout')]);
    assert.equal(code, 0, `${n.name} did not exit 0 on SIGTERM within 10 s: ${fs.readFileSync(n.log, 'utf8').slice(-2000)}`);
  }
  for (const c of all) c.ws.terminate();
  redis.disconnect();
  console.log('command bus (node): ioredis backend and ws clients against 2 wsgwd nodes: OK');
}

main().catch((e) => {
  failed = true;
  console.error(e && e.stack ? e.stack : e);
  for (const f of fs.existsSync(tmp) ? fs.readdirSync(tmp) : [])
    if (f.endsWith('.log')) console.error(`--- ${f}\n${fs.readFileSync(path.join(tmp, f), 'utf8').slice(-3000)}`);
}).finally(() => process.exit(failed ? 1 : 0));
