// The body of bench/cluster-bench (read its header): one node vs three clustered nodes.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');

const opt = { wsgwd: '', connections: 3000, seconds: 10, requests: 2000, size: 100, window: 4 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt)) { console.error(`cluster-bench: unknown option --${k}`); process.exit(2); }
  opt[k] = k === 'wsgwd' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgw-cluster-bench-'));
const children = [];
function cleanup() {
  for (const c of children) { try { process.kill(c.pid, 'SIGKILL'); } catch (_) { /* gone */ } }
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function request(agent, port, method, target, body = '', headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: target, agent, headers }, (res) => {
      let data = '';
      res.on('data', (d) => { data += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: data, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { if (await pred()) return; } catch (_) { /* not yet */ }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function startRedis() {
  const port = await freePort();
  const c = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--dir', tmp],
    { stdio: 'ignore' });
  children.push(c);
  await until(() => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  }), 10000, 'redis-server');
  return port;
}

async function startNode(name, redisPort) {
  const ws = await freePort();
  const control = await freePort();
  let cfg = `node_id: ${name}\nlisten_addr: 127.0.0.1:${ws}\ncontrol_addr: 127.0.0.1:${control}\nthreads: 1\n` +
    'event_log: discard\nlog_level: warn\nmax_connections: 0\nidle_timeout_s: 0\nendpoints:\n' +
    '  - path: /connect\n    set_tags: {group: default}\n';
  if (redisPort) {
    cfg += `cluster:\n  addr: redis://127.0.0.1:${redisPort}/0\n  heartbeat_ms: 1000\n  dead_after_ms: 3000\n` +
      '  command_timeout_ms: 2000\n';
  }
  const file = path.join(tmp, `${name}.yml`);
  fs.writeFileSync(file, cfg);
  const c = spawn(opt.wsgwd, ['--config', file], { stdio: ['ignore', 'ignore', fs.openSync(path.join(tmp, `${name}.err`), 'w')] });
  children.push(c);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  await until(async () => (await request(agent, control, 'GET', '/healthz')).status === 200, 10000, `${name} healthy`);
  return { name, ws, control, agent, proc: c };
}

async function connectClients(nodes, total, counter) {
  const clients = [];
  const per = Math.ceil(total / nodes.length);
  for (const n of nodes) {
    for (let i = 0; i < per && clients.length < total; i += 200) {
      const batch = [];
      for (let j = i; j < Math.min(per, i + 200) && clients.length + batch.length < total; ++j) {
        batch.push(new Promise((resolve, reject) => {
          const c = new WebSocket(`ws://127.0.0.1:${n.ws}/connect`, { perMessageDeflate: false });
          c.on('open', () => resolve(c));
          c.on('error', reject);
          c.on('message', () => { counter.frames += 1; });
        }));
      }
      clients.push(...(await Promise.all(batch)));
    }
  }
  return clients;
}

function pct(sorted, p) { return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]; }

async function roundTrip(entry, expect) {
  const times = [];
  const body = 'x'.repeat(opt.size);
  for (let i = 0; i < opt.requests; ++i) {
    const t = process.hrtime.bigint();
    const r = await request(entry.agent, entry.control, 'POST', '/send?group=default', body);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (r.body !== String(expect)) throw new Error(`/send answered ${r.status} ${r.body}, expected ${expect}`);
  }
  times.sort((a, b) => a - b);
  return { p50: pct(times, 0.5), p99: pct(times, 0.99) };
}

async function fanout(entry, counter, total) {
  const body = 'y'.repeat(opt.size);
  let posted = 0;
  let acted = 0;
  const stopAt = Date.now() + opt.seconds * 1000;
  const start = Date.now();
  const startFrames = counter.frames;
  async function lane() {
    while (Date.now() < stopAt) {
      const r = await request(entry.agent, entry.control, 'POST', '/send?group=default', body);
      posted += 1;
      acted += Number(r.body) || 0;
      // Keep the clients in step: at most a second of frames outstanding.
      while (acted - (counter.frames - startFrames) > total * opt.window * 4 && Date.now() < stopAt + 5000) await sleep(1);
    }
  }
  await Promise.all(Array.from({ length: opt.window }, lane));
  await until(async () => counter.frames - startFrames >= acted, 30000, 'every frame delivered').catch(() => {});
  const seconds = (Date.now() - start) / 1000;
  return { framesPerS: (counter.frames - startFrames) / seconds, posts: posted, acted, received: counter.frames - startFrames };
}

async function scenario(label, nodes) {
  const counter = { frames: 0 };
  // Round trip with one client per node.
  const few = await connectClients(nodes, nodes.length, counter);
  const rt = await roundTrip(nodes[0], nodes.length);
  for (const c of few) c.terminate();
  await sleep(500);
  const clients = await connectClients(nodes, opt.connections, counter);
  await until(async () => (await request(nodes[0].agent, nodes[0].control, 'POST', '/send?group=none', '')).status === 200,
    5000, 'ready');
  const fo = await fanout(nodes[0], counter, clients.length);
  for (const c of clients) c.terminate();
  return { label, nodes: nodes.length, p50_ms: rt.p50, p99_ms: rt.p99, fanout_frames_per_s: fo.framesPerS,
    connections: clients.length, frames: fo.received, expected: fo.acted };
}

(async () => {
  const results = [];
  const single = await startNode('solo', 0);
  results.push(await scenario('1 node', [single]));
  process.kill(single.proc.pid, 'SIGKILL');
  const redis = await startRedis();
  const nodes = [];
  for (const n of ['gw-1', 'gw-2', 'gw-3']) nodes.push(await startNode(n, redis));
  await until(async () => JSON.parse((await request(nodes[0].agent, nodes[0].control, 'GET', '/nodes', '',
    { Accept: 'application/json' })).body).count === 3, 10000, '3 live nodes');
  results.push(await scenario('3 nodes (cluster)', nodes));
  console.error('\n| setup | /send p50 | /send p99 | fan-out frames/s | connections | frames (expected) |');
  console.error('|---|---|---|---|---|---|');
  for (const r of results) {
    console.error(`| ${r.label} | ${r.p50_ms.toFixed(2)} ms | ${r.p99_ms.toFixed(2)} ms | ` +
      `${Math.round(r.fanout_frames_per_s).toLocaleString('en')} | ${r.connections} | ${r.frames} (${r.expected}) |`);
  }
  console.log(JSON.stringify({ bench: 'cluster', options: { ...opt, wsgwd: undefined }, results }));
  const lost = results.some((r) => r.frames !== r.expected);
  process.exit(lost ? 1 : 0);
})().catch((e) => { console.error(`cluster-bench: ${e.stack || e}`); process.exit(2); });
