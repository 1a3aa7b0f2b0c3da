// The body of bench/command-bench (read its header): commands over a Redis stream and an AMQP queue vs
// HTTP /send.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const Redis = require('ioredis');
const amqp = require('amqplib');
const WebSocket = require('ws');

const opt = { wsgwd: '', amqpPort: 0, requests: 2000, commands: 20000, clients: 10, size: 100, window: 16 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt)) { console.error(`command-bench: unknown option --${k}`); process.exit(2); }
  opt[k] = k === 'wsgwd' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgw-command-bench-'));
const children = [];
process.on('exit', () => {
  for (const c of children) { try { process.kill(c.pid, 'SIGKILL'); } catch (_) { /* gone */ } }
  fs.rmSync(tmp, { recursive: true, force: true });
});
process.on('SIGINT', () => process.exit(130));

const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { if (await pred()) return; } catch (_) { /* not yet */ }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function post(port, target, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: target, agent }, (res) => {
      let data = '';
      res.on('data', (d) => { data += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: data }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

async function main() {
  const redisPort = await freePort();
  children.push(spawn('redis-server', ['--port', String(redisPort), '--save', '', '--appendonly', 'no', '--dir', tmp],
    { stdio: 'ignore' }));
  const url = `redis://127.0.0.1:${redisPort}/0`;
  const ws = await freePort();
  const control = await freePort();
  const cfg = path.join(tmp, 'wsgw.yml');
  fs.writeFileSync(cfg, `node_id: bench\nlisten_addr: 127.0.0.1:${ws}\ncontrol_addr: 127.0.0.1:${control}\n` +
    `threads: 1\nevent_log: discard\nlog_level: warn\nidle_timeout_s: 0\ncommand_redis:\n  addr: ${url}\n` +
    (opt.amqpPort ? `command_amqp:\n  addr: amqp://guest:guest@127.0.0.1:${opt.amqpPort}/\n` : '') +
    'endpoints:\n  - path: /connect\n    set_tags: {group: default}\n');
  await until(() => new Promise((resolve) => {
    const s = net.connect(redisPort, '127.0.0.1', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  }), 10000, 'redis-server');
  children.push(spawn(opt.wsgwd, ['--config', cfg], { stdio: ['ignore', 'ignore', fs.openSync(path.join(tmp, 'err'), 'w')] }));
  await until(async () => (await new Promise((resolve) => http.get(`http://127.0.0.1:${control}/readyz`,
    (r) => { r.resume(); resolve(r.statusCode); }).on('error', () => resolve(0)))) === 200, 10000, 'wsgwd ready');

  // Clients; the first one's frames resolve the latency waits, all count for throughput.
  let frames = 0;
  let waiter = null;
  const clients = [];
  for (let i = 0; i < opt.clients; ++i) {
    clients.push(await new Promise((resolve, reject) => {
      const c = new WebSocket(`ws://127.0.0.1:${ws}/connect`, { perMessageDeflate: false });
      c.on('open', () => resolve(c));
      c.on('error', reject);
      c.on('message', () => {
        frames += 1;
        if (i === 0 && waiter) { const w = waiter; waiter = null; w(); }
      });
    }));
  }
  const redis = new Redis(url);
  const replies = new Redis(url);
  const body = 'x'.repeat(opt.size);
  const arrived = () => new Promise((r) => { waiter = r; });

  // 1. Latency: from issuing a command to its frame at a client, one at a time; and for the stream,
  //    also until its reply entry (count) is read back.
  async function latency(issue) {
    const t = [];
    for (let i = 0; i < opt.requests; ++i) {
      const got = arrived();
      const t0 = process.hrtime.bigint();
      await Promise.all([issue(i), got]);
      t.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    t.sort((a, b) => a - b);
    return { p50: pct(t, 0.5), p99: pct(t, 0.99) };
  }
  const httpLat = await latency(async () => {
    const r = await post(control, '/send?group=default', body);
    if (r.body !== String(opt.clients)) throw new Error(`/send answered ${r.status} ${r.body}`);
  });
  const streamLat = await latency(async () => {
    await redis.xadd('wsgw:commands', '*', 'action', 'send', 'selector', 'group=default', 'message', body);
  });
  let lastReply = '0';
  const replyLat = await latency(async (i) => {
    await redis.xadd('wsgw:commands', '*', 'action', 'send', 'selector', 'group=default', 'message', body,
      'command_id', `lat-${i}`, 'reply_to', 'bench:replies');
    const r = await replies.xread('BLOCK', 5000, 'STREAMS', 'bench:replies', lastReply);
    lastReply = r[0][1][r[0][1].length - 1][0];
  });

  // The same over AMQP: persistent publishes to the durable command queue.
  let amqpLat = null, amqpReplyLat = null, amqpRate = null, conn = null;
  const msg = (extra) => Buffer.from(JSON.stringify({ action: 'send', selector: 'group=default', message: body, ...extra }));
  if (opt.amqpPort) {
    await until(async () => /wsgw_command_bus_up\{transport="amqp"\} 1/.test(await new Promise((resolve) =>
      http.get(`http://127.0.0.1:${control}/metrics`, (r) => { let d = ''; r.on('data', (x) => { d += x; }); r.on('end', () => resolve(d)); })
        .on('error', () => resolve('')))), 20000, 'the AMQP reader');
    conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${opt.amqpPort}/`);
    const ch = await conn.createConfirmChannel();
    let replied = null;
    await ch.consume('amq.rabbitmq.reply-to', () => { if (replied) { const r = replied; replied = null; r(); } }, { noAck: true });
    amqpLat = await latency(async () => {
      ch.sendToQueue('wsgw.commands', msg({}), { persistent: true });
    });
    amqpReplyLat = await latency(async (i) => {
      const reply = new Promise((r) => { replied = r; });
      ch.sendToQueue('wsgw.commands', msg({ command_id: `alat-${i}` }),
        { persistent: true, replyTo: 'amq.rabbitmq.reply-to', correlationId: String(i) });
      await reply;
    });
    amqpRate = () => throughput(async () => {
      for (let i = 0; i < opt.commands; i += 500) {
        for (let j = i; j < Math.min(opt.commands, i + 500); ++j)
          ch.sendToQueue('wsgw.commands', msg({ command_id: `atp-${j}` }), { persistent: true });
        await ch.waitForConfirms();
      }
    });
  }

  // 2. Throughput: `commands` sends, until every client has every frame.
  async function throughput(issueAll) {
    await sleep(200);
    const start = frames;
    const want = start + opt.commands * opt.clients;
    const t0 = process.hrtime.bigint();
    await issueAll();
    await until(() => frames >= want, 120000, 'every frame');
    return opt.commands / (Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const httpRate = await throughput(async () => {
    let next = 0;
    await Promise.all(Array.from({ length: opt.window }, async () => {
      while (next < opt.commands) { next += 1; await post(control, '/send?group=default', body); }
    }));
  });
  const streamRate = await throughput(async () => {
    for (let i = 0; i < opt.commands; i += 500) {
      const p = redis.pipeline();
      for (let j = i; j < Math.min(opt.commands, i + 500); ++j)
        p.xadd('wsgw:commands', '*', 'action', 'send', 'selector', 'group=default', 'message', body);
      await p.exec();
    }
  });
  const streamIdRate = await throughput(async () => {
    for (let i = 0; i < opt.commands; i += 500) {
      const p = redis.pipeline();
      for (let j = i; j < Math.min(opt.commands, i + 500); ++j)
        p.xadd('wsgw:commands', '*', 'action', 'send', 'selector', 'group=default', 'message', body,
          'command_id', `tp-${j}`);
      await p.exec();
    }
  });

  const amqpRateValue = amqpRate ? await amqpRate() : null;

  const f = (x) => x.toFixed(2);
  console.log(`| path | command to frame p50 | p99 | commands/s (${opt.clients} clients, ${opt.size}-byte messages) |`);
  console.log('|---|---|---|---|');
  console.log(`| HTTP POST /send (keep-alive; ${opt.window} in flight for the rate) | ${f(httpLat.p50)} ms | ${f(httpLat.p99)} ms | ${Math.round(httpRate)} |`);
  console.log(`| Redis stream XADD (no command_id; pipelined for the rate) | ${f(streamLat.p50)} ms | ${f(streamLat.p99)} ms | ${Math.round(streamRate)} |`);
  console.log(`| Redis stream XADD with command_id (+ reply_to for the latency: until the reply is read) | ${f(replyLat.p50)} ms | ${f(replyLat.p99)} ms | ${Math.round(streamIdRate)} |`);
  if (amqpLat) {
    console.log(`| AMQP publish, persistent (with command_id, confirms every 500 for the rate) | ${f(amqpLat.p50)} ms | ${f(amqpLat.p99)} ms | ${Math.round(amqpRateValue)} |`);
    console.log(`| AMQP publish with command_id + reply_to: until the reply is read | ${f(amqpReplyLat.p50)} ms | ${f(amqpReplyLat.p99)} ms | |`);
  }
  console.log(JSON.stringify({ http: { ...httpLat, rate: httpRate }, stream: { ...streamLat, rate: streamRate },
    streamWithId: { ...replyLat, rate: streamIdRate },
    ...(amqpLat ? { amqp: { ...amqpLat, rate: amqpRateValue }, amqpWithReply: amqpReplyLat } : {}) }));
  if (conn) await conn.close();
  for (const c of clients) c.terminate();
  redis.disconnect();
  replies.disconnect();
}
main().then(() => process.exit(0), (e) => { console.error(`command-bench: ${e.stack || e}`); process.exit(1); });
