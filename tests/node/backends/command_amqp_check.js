'use strict';
// Commands in over an AMQP queue, checked with clients we did not write: amqplib as the backend
// (including the README's example backend, amqp_backend.js, run as it is) and npm `ws` as the
// WebSocket clients, against two real wsgwd nodes (a cluster on a real redis-server), started here
// on free loopback ports and stopped (by PID) whatever happens, and the private RabbitMQ node that
// run_amqp.sh started on AMQP_PORT.
//
// Usage: node command_amqp_check.js PATH/TO/wsgwd AMQP_PORT   (through run_amqp.sh)
// Exit: 0 passed, 1 failed, 77 redis-server or rabbitmq-server missing (a failure under CI=true).

const assert = require('node:assert/strict');
const { spawn, execFile, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const amqp = require('amqplib');
const WebSocket = require('ws');

const wsgwd = process.argv[2];
const amqpPort = Number(process.argv[3]);
const children = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgw-cmdamqp-'));
let failed = false;

function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);

function skip(why) {
  const ci = /^(true|1|yes)$/i.test(process.env.CI || '');
  console.error(`command bus over AMQP (node): ${ci ? 'FAIL' : 'SKIP'}: ${why}`);
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

async function startNode(name, redisUrl, amqpUrl) {
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
command_amqp:
  addr: '${amqpUrl}'
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
  assert.ok(await eventually(async () => /wsgw_command_bus_up\{transport="amqp"\} 1/.test((await get(control, '/metrics')).body)),
    `${name} never consumed the queue`);
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
function readmeBackend(amqpUrl, selector, message) {
  return new Promise((resolve, reject) => {
    execFile('node', [path.join(__dirname, 'amqp_backend.js'), amqpUrl, selector, message], { timeout: 20000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout))));
  });
}

async function main() {
  if (!wsgwd || !fs.existsSync(wsgwd) || !amqpPort) throw new Error('usage: node command_amqp_check.js PATH/TO/wsgwd AMQP_PORT');
  const redisServer = which('redis-server');
  if (!redisServer) skip('redis-server is not installed (Debian package redis-server; scripts/bootstrap installs it)');

  const redisPort = await freePort();
  const redisChild = spawn(redisServer, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', tmp], { stdio: 'ignore' });
  children.push(redisChild);
  const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
  const amqpUrl = `amqp://guest:guest@127.0.0.1:${amqpPort}/`;

  const nodes = [await startNode('gw-1', redisUrl, amqpUrl), await startNode('gw-2', redisUrl, amqpUrl)];
  for (const n of nodes) {
    for (let i = 0; i < 2; ++i) n.clients.push(await connectClient(n));
    assert.ok(await eventually(async () => JSON.parse((await get(n.control, '/nodes', { Accept: 'application/json' })).body).count === 2));
  }
  assert.ok(await eventually(async () => (await get(nodes[0].control, '/status')).body.split('\n').length - 1 === 4));
  const all = nodes.flatMap((n) => n.clients);
  const settle = () => sleep(300);

  // 1. The README's backend: one send, the cluster-wide count in its reply.
  const reply = await readmeBackend(amqpUrl, 'group=default', 'hello from amqplib');
  assert.equal(reply.count, 4);
  assert.deepEqual(reply.missing_nodes, []);
  assert.ok(reply.command_id);
  assert.ok(await eventually(() => all.every((c) => c.got.length === 1)));
  await settle();
  for (const c of all) assert.deepEqual(c.got.map((m) => m.data.toString()), ['hello from amqplib']);

  // The rest through one amqplib connection: an exclusive reply queue, replies by correlationId.
  const conn = await amqp.connect(amqpUrl);
  const ch = await conn.createConfirmChannel();
  const { queue: replyQueue } = await ch.assertQueue('', { exclusive: true });
  const waiting = new Map();
  await ch.consume(replyQueue, (m) => {
    const w = waiting.get(m.properties.correlationId);
    if (w) w(JSON.parse(m.content.toString()));
  }, { noAck: true });
  const command = async (body, extra = {}) => {
    const correlationId = crypto.randomUUID();
    const answer = new Promise((resolve, reject) => {
      waiting.set(correlationId, resolve);
      setTimeout(() => reject(new Error(`no reply to ${JSON.stringify(body)}`)), 10000);
    });
    const content = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    ch.sendToQueue('wsgw.commands', content, { persistent: true, replyTo: replyQueue, correlationId, ...extra });
    await ch.waitForConfirms();
    return answer;
  };

  // 2. Binary (message_base64), with a command_id sent twice: applied once, the second a duplicate.
  const bytes = Buffer.from([0, 255, 1, 2]);
  const bin = { action: 'send', selector: 'group=default', message_base64: bytes.toString('base64'), command_id: 'bin-1' };
  const first = await command(bin);
  const again = await command(bin);
  assert.deepEqual(first, { command_id: 'bin-1', count: 4, missing_nodes: [] });
  assert.deepEqual(again, { command_id: 'bin-1', count: 4, duplicate: true });
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
  const tagged = await command({ action: 'settags', selector: `id=${id}`, tags: { vip: '1' } });
  assert.equal(tagged.count, 1);
  assert.equal((await get(nodes[0].control, '/status?vip=1')).body, `id=${id} group=default vip=1\n`);
  const closed = await command({ action: 'close', selector: 'vip=1', message: 'bye' });
  assert.equal(closed.count, 1);
  assert.ok(await eventually(() => all.some((c) => c.closeCode === 1000)));
  const gone = all.find((c) => c.closeCode === 1000);
  assert.equal(gone.got[gone.got.length - 1].data.toString(), 'bye');

  // 4. Malformed: an error reply, acknowledged, nothing sent.
  const bad = await command({ action: 'launch', selector: 'group=default' });
  assert.match(bad.error, /^unknown action/);
  const badJson = await command(Buffer.from('{"action":'));
  assert.match(badJson.error, /^bad json/);
  const badSel = await command({ action: 'send', selector: 'a=%zz', message: 'x' });
  assert.match(badSel.error, /^bad selector/);
  const check = await ch.checkQueue('wsgw.commands');
  assert.equal(check.messageCount, 0);
  await conn.close();

  // 5. Both nodes stop cleanly on SIGTERM, within a few seconds.
  for (const n of nodes) {
    const exited = new Promise((r) => n.child.on('exit', (code) => r(code)));
    const t0 = Date.now();
    n.child.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(10000).then(() => 'timeout')]);
    assert.equal(code, 0, `${n.name} did not exit 0 on SIGTERM within 10 s: ${fs.readFileSync(n.log, 'utf8').slice(-2000)}`);
    assert.ok(Date.now() - t0 < 3000, `${n.name} took ${Date.now() - t0} ms to stop`);
  }
  for (const c of all) c.ws.terminate();
  console.log('command bus over AMQP (node): amqplib backend and ws clients against 2 wsgwd nodes: OK');
}

main().catch((e) => {
  failed = true;
  console.error(e && e.stack ? e.stack : e);
  for (const f of fs.existsSync(tmp) ? fs.readdirSync(tmp) : [])
    if (f.endsWith('.log')) console.error(`--- ${f}\n${fs.readFileSync(path.join(tmp, f), 'utf8').slice(-3000)}`);
}).finally(() => process.exit(failed ? 1 : 0));
