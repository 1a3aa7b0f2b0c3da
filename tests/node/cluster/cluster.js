'use strict';
// The meson test `cluster_node` (suite `cluster`): three real wsgwd nodes on one real
// redis-server, checked only through clients we did not write: npm `ws` for the WebSocket
// clients and npm `ioredis` for the backend that reads the event stream and the cluster's keys.
//
// Usage: node tests/node/cluster/cluster.js PATH/TO/wsgwd   (run.sh installs the npm packages)
//
// What it checks, in order:
//   1. Three nodes (gw-1, gw-2, gw-3) see each other: GET /nodes on each counts 3, and the
//      cluster's node hash in Redis (wsgw:cluster:nodes) holds the three.
//   2. A /send on each node reaches every client of every node exactly once (6 clients, 3 sends:
//      each client gets each message once, and each answer is the cluster-wide count 6); a
//      selector that matches one node's clients only reaches them (answer 2).
//   3. The backend (ioredis, XRANGE) sees one `open` event per client, from all three nodes.
//   4. gw-3 killed with SIGKILL: within dead_after_ms + heartbeat_ms (plus slack for a loaded
//      machine) the backend reads a `close` event with reason node_lost and lost_node gw-3 for
//      each of gw-3's clients, exactly once each (no second survivor repeats them), gw-3 leaves
//      the node hash, and a /send from gw-1 counts the 4 clients left.
//   5. gw-1 and gw-2 stop with SIGTERM and exit 0.
// Every wait is bounded. Whatever happens, every process started here (redis-server and the
// nodes) is stopped by its PID and the temporary directory removed.
//
// Exit status: 0 passed, 1 failed, 77 redis-server missing (a failure under CI=true).

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const Redis = require(path.join(__dirname, '..', 'node_modules', 'ioredis'));
const { SLOW, sanitized, log, sleep, wsgwd, tmp, start, tail, freePorts, until, http, client, fields } = require('../lib/procs')({
  label: 'cluster (node)',
  script: 'cluster.js',
  needs: ['redis-server'],
});

const HEARTBEAT_MS = 200;
const DEAD_AFTER_MS = 1000;
const COMMAND_TIMEOUT_MS = 2000;


async function main() {
  const [redisPort, ...ports] = await freePorts(7);

  // --- the Redis server and the backend's client ---------------------------------------------
  const redis = start(['redis-server', '--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', tmp], 'redis');
  const backend = new Redis({ host: '127.0.0.1', port: redisPort, lazyConnect: true, maxRetriesPerRequest: 2,
    retryStrategy: (n) => (n > 50 ? null : 100) });
  await until(async () => (await backend.connect().then(() => true, () => false)) && (await backend.ping()) === 'PONG',
    10000, 'redis-server answers PING');

  // --- three nodes ---------------------------------------------------------------------------
  const nodes = [];
  for (let i = 0; i < 3; i++) {
    const name = `gw-${i + 1}`;
    const ws = ports[2 * i];
    const control = ports[2 * i + 1];
    const config = path.join(tmp, `${name}.yml`);
    fs.writeFileSync(config, [
      `# Written by tests/node/cluster/cluster.js`,
      `node_id: ${name}`,
      `listen_addr: 127.0.0.1:${ws}`,
      `control_addr: 127.0.0.1:${control}`,
      'threads: 2',
      'drain_s: 0',
      'log_level: info',
      'cluster:',
      `  addr: redis://127.0.0.1:${redisPort}/0`,
      `  heartbeat_ms: ${HEARTBEAT_MS}`,
      `  dead_after_ms: ${DEAD_AFTER_MS}`,
      `  command_timeout_ms: ${COMMAND_TIMEOUT_MS}`,
      'stream_redis:',
      `  addr: redis://127.0.0.1:${redisPort}/0`,
      '  stream_name: events',
      'endpoints:',
      '  - path: /c',
      '    compression: false',
      '    set_tags:',
      '      group: cl',
      `      at: ${name}`,
      '    stream_include_tags: [group, at]',
      '',
    ].join('\n'));
    const proc = start([wsgwd, '--config', config], name);
    nodes.push({ name, ws, control, proc, clients: [] });
  }
  for (const n of nodes) {
    await until(async () => {
      if (n.proc.exitCode !== null) throw new Error(`${n.name} exited: ${tail(n.name)}`);
      return (await http(n.control, 'GET', '/readyz')).status === 200;
    }, 15000 * SLOW, `${n.name} ready`);
  }

  // --- 1. they see each other ----------------------------------------------------------------
  for (const n of nodes) {
    await until(async () => JSON.parse((await http(n.control, 'GET', '/nodes', { accept: 'application/json' })).text)
      .count === 3, 10000 * SLOW, `${n.name}'s /nodes counts 3`);
  }
  assert.deepEqual((await backend.hkeys('wsgw:cluster:nodes')).sort(), ['gw-1', 'gw-2', 'gw-3']);
  log('three nodes see each other (GET /nodes, wsgw:cluster:nodes)');

  // --- 2. commands from every node reach every client once ----------------------------------
  for (const n of nodes) {
    for (let k = 0; k < 2; k++) n.clients.push(await client(n.ws, '/c'));
  }
  const all = nodes.flatMap((n) => n.clients);
  // Every client is registered (and its open event written) before the commands.
  await until(async () => (await backend.xlen('events')) >= 6, 10000 * SLOW, 'six open events in the stream');
  for (const n of nodes) {
    const r = await http(n.control, 'POST', '/send?group=cl', { body: `from-${n.name}` });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, '6', `/send?group=cl on ${n.name}`);
  }
  await until(() => all.every((c) => c.received.length >= 3), 5000 * SLOW, 'every client got three messages');
  await sleep(300); // would a duplicate follow?
  for (const c of all) assert.deepEqual([...c.received].sort(), ['from-gw-1', 'from-gw-2', 'from-gw-3']);

  const r = await http(nodes[0].control, 'POST', '/send?at=gw-2', { body: 'only gw-2' });
  assert.equal(r.text, '2');
  await until(() => nodes[1].clients.every((c) => c.received.length === 4), 5000 * SLOW, "gw-2's clients got it");
  await sleep(300);
  for (const n of [nodes[0], nodes[2]]) for (const c of n.clients) assert.equal(c.received.length, 3);
  log('each /send reached each of the 6 clients exactly once; at=gw-2 only gw-2\'s 2');

  // --- 3. the backend sees every open ----------------------------------------------------------
  const opens = (await backend.xrange('events', '-', '+')).map(fields).filter((e) => e.action === 'open');
  assert.equal(opens.length, 6);
  const tagsOf = (e) => new URLSearchParams(e.tags).get('at');
  assert.deepEqual([...new Set(opens.map(tagsOf))].sort(), ['gw-1', 'gw-2', 'gw-3']);
  assert.equal(new Set(opens.map((e) => e.connection)).size, 6);
  const lostIds = opens.filter((e) => tagsOf(e) === 'gw-3').map((e) => e.connection).sort();
  assert.equal(lostIds.length, 2);
  log('the backend read 6 open events, 2 from each node');

  // --- 4. a node killed --------------------------------------------------------------------------
  const lastId = (await backend.xrevrange('events', '+', '-', 'COUNT', 1))[0][0];
  const killedAt = Date.now();
  process.kill(nodes[2].proc.pid, 'SIGKILL');
  await nodes[2].proc.exited;
  const nodeLost = async () => (await backend.xrange('events', `(${lastId}`, '+')).map(fields)
    .filter((e) => e.action === 'close' && e.reason === 'node_lost');
  await until(async () => (await nodeLost()).length >= 2, 10000 * SLOW, "node_lost closes of gw-3's clients");
  const took = Date.now() - killedAt;
  if (!sanitized) {
    assert.ok(took < DEAD_AFTER_MS + HEARTBEAT_MS + 1500,
      `the node_lost closes took ${took} ms, over dead_after_ms + heartbeat_ms + 1.5 s`);
  }
  await sleep(3 * HEARTBEAT_MS); // would another survivor repeat them?
  const closes = await nodeLost();
  assert.equal(closes.length, 2, JSON.stringify(closes));
  assert.deepEqual(closes.map((e) => e.connection).sort(), lostIds);
  for (const e of closes) assert.equal(e.lost_node, 'gw-3');
  await until(async () => (await backend.hexists('wsgw:cluster:nodes', 'gw-3')) === 0, 5000 * SLOW,
    'gw-3 gone from wsgw:cluster:nodes');
  assert.equal((await http(nodes[0].control, 'POST', '/send?group=cl', { body: 'after' })).text, '4');
  log(`gw-3 killed: its 2 clients closed as node_lost exactly once, after ${took} ms; /send counts 4`);

  // --- 5. clean stops ----------------------------------------------------------------------------
  for (const c of all) c.terminate();
  for (const n of nodes.slice(0, 2)) {
    process.kill(n.proc.pid, 'SIGTERM');
    const result = await Promise.race([n.proc.exited, sleep(15000 * SLOW).then(() => ({ timeout: true }))]);
    assert.deepEqual(result, { code: 0, signal: null }, `${n.name} did not exit 0 on SIGTERM: ${tail(n.name)}`);
  }
  backend.disconnect();
  process.kill(redis.pid, 'SIGTERM');
  await Promise.race([redis.exited, sleep(5000)]);
  log('gw-1 and gw-2 stopped cleanly: passed');
}

main().then(
  () => process.exit(0),
  (e) => {
    log(`FAILED: ${e.stack || e}`);
    for (const n of ['gw-1', 'gw-2', 'gw-3']) log(`--- ${n}'s log (tail):\n${tail(n)}`);
    process.exit(1);
  },
);
