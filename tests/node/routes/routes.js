'use strict';
// The meson test `routes_node` (suite `node`): wsgwd routing endpoints to their own backends,
// checked only through clients we did not write: npm `ws` WebSocket clients, npm `ioredis`
// backends reading each backend's Redis and npm `amqplib` consumers of each AMQP backend's vhost.
//
// Usage: [WSGW_AMQP_PORT=N] node tests/node/routes/routes.js PATH/TO/wsgwd
//   (through run.sh, which installs the npm packages and, given rabbitmq_run, starts a private
//   RabbitMQ node with vhosts chat and billing on WSGW_AMQP_PORT)
//
// Two redis-servers: A holds backend `chat` (stream chat), B holds backend `billing` (stream
// billing, messages only) and the top-level stream_redis (db 1, stream legacy). Endpoints /chat
// -> chat, /pay -> billing, /legacy -> the top-level sink. Checks:
//   1. Each stream holds exactly its endpoint's events, in order, and nothing else.
//   2. Redis A stopped (SIGSTOP): /pay's messages keep reaching billing within 1 s (x SLOW);
//      /chat's wait in chat's backlog; after SIGCONT every one arrives, in order.
//   3. With WSGW_AMQP_PORT: endpoints /achat -> backend chatq (vhost chat) and /apay -> payq
//      (vhost billing, opens and closes only): each vhost's queue holds exactly its endpoint's
//      events, in order, as amqplib reads them; the default vhost got nothing; /legacy's events
//      reached neither.
// Exit status: 0 passed, 1 failed, 77 redis-server missing (a failure under CI=true).

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const Redis = require(path.join(__dirname, '..', 'node_modules', 'ioredis'));
const amqp = require(path.join(__dirname, '..', 'node_modules', 'amqplib'));

const amqpPort = Number(process.env.WSGW_AMQP_PORT || 0);
const amqpUrl = (vhost) => `amqp://guest:guest@127.0.0.1:${amqpPort}/${encodeURIComponent(vhost)}`;
const { SLOW, log, sleep, wsgwd, tmp, children, start, tail, freePorts, until, http, client, fields } = require('../lib/procs')({
  label: 'routes (node)',
  script: 'routes.js',
  needs: ['redis-server'],
});

const messagesOf = (entries) => entries.map(fields).filter((f) => f.action === 'message').map((f) => f.message);
const distinct = (v) => v.filter((x, i) => v.indexOf(x) === i);
const range = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

async function redisServer(port, name) {
  start(['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', tmp, '--dbfilename', `${name}.rdb`], name);
  // Not lazy: ioredis retries until the server listens; a probe's PING waits for it.
  const r = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 2, retryStrategy: (n) => (n > 100 ? null : 100) });
  r.on('error', () => {}); // refused until the server listens
  await until(async () => (await r.ping()) === 'PONG', 10000, `${name} answers PING (log:\n${tail(name)})`);
  return r;
}

async function send(ws, messages) {
  for (const m of messages) await new Promise((resolve, reject) => ws.send(m, (e) => (e ? reject(e) : resolve())));
}

async function main() {
  const [portA, portB, wsPort, controlPort] = await freePorts(4);
  const a = await redisServer(portA, 'redis-a');
  const b = await redisServer(portB, 'redis-b');
  const legacyB = new Redis({ host: '127.0.0.1', port: portB, db: 1 });
  const redisA = [...children][0];

  const config = path.join(tmp, 'wsgwd.yml');
  fs.writeFileSync(config, [
    '# Written by tests/node/routes/routes.js',
    `listen_addr: 127.0.0.1:${wsPort}`,
    `control_addr: 127.0.0.1:${controlPort}`,
    'threads: 2',
    'drain_s: 0',
    'stream_redis:',
    `  addr: redis://127.0.0.1:${portB}/1`,
    '  stream_name: legacy',
    'backends:',
    '  chat:',
    `    redis: {addr: 'redis://127.0.0.1:${portA}/0', stream_name: chat, timeout_ms: 300}`,
    '  billing:',
    `    redis: {addr: 'redis://127.0.0.1:${portB}/0', stream_name: billing}`,
    '    actions: [message]',
    'endpoints:',
    '  - path: /chat',
    '    backends: [chat]',
    '  - path: /pay',
    '    backends: [billing]',
    '  - path: /legacy',
    ...(amqpPort ? [
      '  - path: /achat',
      '    backends: [chatq]',
      '    set_tags: {room: a}',
      '    stream_include_tags: [room]',
      '  - path: /apay',
      '    backends: [payq]',
    ] : []),
    '',
  ].join('\n').replace('endpoints:', amqpPort ? [
    '  chatq:',
    `    amqp: {addr: '${amqpUrl('chat')}', exchange: events, queue: q}`,
    '  payq:',
    `    amqp: {addr: '${amqpUrl('billing')}', exchange: events, queue: q}`,
    '    actions: [open, close]',
    'endpoints:',
  ].join('\n') : 'endpoints:'));
  const gw = start([wsgwd, '--config', config], 'wsgwd');
  await until(async () => (await http(controlPort, 'GET', '/readyz')).status === 200, 15000 * SLOW,
    `wsgwd ready (log:\n${tail('wsgwd')})`);

  // 1. exactly its endpoint's events, in order
  const chat = await client(wsPort, '/chat');
  const pay = await client(wsPort, '/pay');
  const legacy = await client(wsPort, '/legacy');
  await send(chat, range('c', 30));
  await send(pay, range('p', 30));
  await send(legacy, range('l', 30));
  const chatEntries = await until(async () => {
    const e = await a.xrange('chat', '-', '+');
    return distinct(messagesOf(e)).length >= 30 && e;
  }, 10000 * SLOW, 'chat has /chat\'s 30 messages');
  assert.deepEqual(distinct(messagesOf(chatEntries)), range('c', 30));
  assert.equal(fields(chatEntries[0]).action, 'open');
  assert.deepEqual(await a.keys('*'), ['chat'], 'chat\'s Redis holds chat\'s stream only');
  const billingEntries = await until(async () => {
    const e = await b.xrange('billing', '-', '+');
    return distinct(messagesOf(e)).length >= 30 && e;
  }, 10000 * SLOW, 'billing has /pay\'s 30 messages');
  assert.ok(billingEntries.map(fields).every((f) => f.action === 'message'), 'billing takes messages only');
  assert.deepEqual(distinct(messagesOf(billingEntries)), range('p', 30));
  assert.deepEqual(await b.keys('*'), ['billing']);
  const legacyEntries = await until(async () => {
    const e = await legacyB.xrange('legacy', '-', '+');
    return distinct(messagesOf(e)).length >= 30 && e;
  }, 10000 * SLOW, 'the top-level sink has /legacy\'s 30 messages');
  assert.deepEqual(distinct(messagesOf(legacyEntries)), range('l', 30));
  assert.deepEqual(await legacyB.keys('*'), ['legacy']);
  log('each backend holds exactly its endpoint\'s events, in order');

  // 2. chat's Redis stopped: billing keeps its latency; chat gets everything afterwards
  process.kill(redisA.pid, 'SIGSTOP');
  try {
    await send(chat, range('during-c', 100));
    let worst = 0;
    for (let i = 0; i < 10; i++) {
      const m = `during-p${i}`;
      const t0 = Date.now();
      await send(pay, [m]);
      await until(async () => messagesOf(await b.xrange('billing', '-', '+')).includes(m), 5000 * SLOW,
        `${m} reaches billing while chat's Redis is stopped`, 5);
      worst = Math.max(worst, Date.now() - t0);
      await sleep(200);
    }
    assert.ok(worst < 1000 * SLOW, `billing's worst latency ${worst} ms while chat is down`);
    const ready = await http(controlPort, 'GET', '/readyz');
    assert.equal(ready.status, 503);
    assert.match(ready.text, /backend 'chat'/);
    log(`billing kept delivering (worst ${worst} ms) with chat's Redis stopped; /readyz: ${ready.text.trim()}`);
  } finally {
    process.kill(redisA.pid, 'SIGCONT');
  }
  await until(async () => distinct(messagesOf(await a.xrange('chat', '-', '+'))).length >= 130, 20000 * SLOW,
    'chat gets every message it missed');
  assert.deepEqual(distinct(messagesOf(await a.xrange('chat', '-', '+'))), [...range('c', 30), ...range('during-c', 100)]);
  log('chat got every missed event, in order');

  if (amqpPort) await amqpBackends(wsPort);
  else log('no RabbitMQ in this run (a build without rabbitmq-c): the AMQP backends were not checked');

  for (const ws of [chat, pay, legacy]) ws.close();
  process.kill(gw.pid, 'SIGTERM');
  const { code } = await gw.exited;
  assert.equal(code, 0, 'wsgwd exits 0 on SIGTERM');
  for (const r of [a, b, legacyB]) r.disconnect();
}

// Reads every message of queue `queue` on `vhost` until none came for `quietMs` (bounded by
// `maxMs`), acknowledging each; returns the parsed events.
async function drain(vhost, queue, { quietMs = 1000, maxMs = 15000 } = {}) {
  const conn = await amqp.connect(amqpUrl(vhost));
  try {
    const ch = await conn.createChannel();
    const events = [];
    let last = Date.now();
    await ch.consume(queue, (m) => {
      events.push(JSON.parse(m.content.toString()));
      ch.ack(m);
      last = Date.now();
    });
    const end = Date.now() + maxMs * SLOW;
    while (Date.now() - last < quietMs * SLOW && Date.now() < end) await sleep(50);
    return events;
  } finally {
    await conn.close();
  }
}

async function amqpBackends(wsPort) {
  const achat = await client(wsPort, '/achat');
  const apay = await client(wsPort, '/apay');
  await send(achat, range('ac', 25));
  await send(apay, range('ap', 25));
  achat.close();
  apay.close();
  // Both closes must have reached the broker before the queues are read to the end.
  const closed = async (vhost) => {
    const conn = await amqp.connect(amqpUrl(vhost));
    try {
      const ch = await conn.createChannel();
      return (await ch.checkQueue('q')).messageCount;
    } finally {
      await conn.close();
    }
  };
  await until(async () => (await closed('chat')) >= 27 && (await closed('billing')) >= 2, 15000 * SLOW,
    'the AMQP backends\' queues have their endpoints\' events');

  const chatEvents = await drain('chat', 'q');
  assert.ok(chatEvents.every((e) => e.endpoint === '/achat'), 'vhost chat holds /achat\'s events only');
  const chatActions = chatEvents.map((e) => e.action).filter((a, i, v) => i === 0 || a !== v[i - 1]);
  assert.deepEqual(chatActions, ['open', 'message', 'close'], 'open, then the messages, then close');
  assert.deepEqual(distinct(chatEvents.filter((e) => e.action === 'message').map((e) => e.message)), range('ac', 25));
  assert.equal(chatEvents[0].tags, 'room=a', 'the endpoint\'s stream_include_tags ride along');

  const payEvents = await drain('billing', 'q');
  assert.ok(payEvents.every((e) => e.endpoint === '/apay'), 'vhost billing holds /apay\'s events only');
  assert.deepEqual(distinct(payEvents.map((e) => e.action)), ['open', 'close'], 'payq takes opens and closes only');

  // Nothing reached the default vhost: no queue q was ever declared there.
  const root = await amqp.connect(amqpUrl('/'));
  try {
    const ch = await root.createChannel();
    ch.on('error', () => {});
    await assert.rejects(ch.checkQueue('q'), /NOT_FOUND|404/, 'the default vhost has no queue q');
  } finally {
    await root.close().catch(() => {});
  }
  log(`AMQP: vhost chat got /achat's ${chatEvents.length} events in order, vhost billing /apay's ${payEvents.length} (opens and closes only), the default vhost nothing`);
}

main().then(
  () => {
    log('PASS');
    process.exit(0);
  },
  (e) => {
    log(`FAIL: ${e.stack || e}\nwsgwd log:\n${tail('wsgwd')}`);
    process.exit(1);
  },
);
