'use strict';
// The WebSocket handshake as the npm `ws` client sees it, and the plain-HTTP edges of both ports.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EP, connect, closeAll, control, resolveIds, wsUrl } = require('./lib/gw');

const T = { timeout: 15000 };

test('a client without a subprotocol is accepted and none is echoed', T, async () => {
  const c = await connect(EP.compressed);
  try {
    assert.equal(c.protocol, '');
    assert.ok(c.isOpen);
  } finally {
    await c.close();
  }
});

test('a client offering one subprotocol gets it echoed', T, async () => {
  const c = await connect(EP.plain, { protocols: ['chat.v1'] });
  try {
    assert.equal(c.protocol, 'chat.v1');
  } finally {
    await c.close();
  }
});

test('a client offering several subprotocols gets the first one echoed', T, async () => {
  const c = await connect(EP.compressed, { protocols: ['second-choice-is-not-taken', 'b', 'c'] });
  const d = await connect(EP.compressed, { protocols: ['b', 'second-choice-is-not-taken'] });
  try {
    assert.equal(c.protocol, 'second-choice-is-not-taken');
    assert.equal(d.protocol, 'b');
  } finally {
    await closeAll([c, d]);
  }
});

test('clients connecting at once with different subprotocols each get their own', T, async () => {
  // The daemon keeps one echoed name per shard; simultaneous handshakes must not mix them up.
  const n = 40;
  const clients = await Promise.all(
    Array.from({ length: n }, (_, i) => connect(i % 2 ? EP.plain : EP.compressed, { protocols: [`proto-${i}`, 'x'] })),
  );
  try {
    clients.forEach((c, i) => assert.equal(c.protocol, `proto-${i}`, `client ${i}`));
    // And they are real connections, with ids in /status.
    const ids = await resolveIds(clients);
    assert.equal(new Set(ids).size, n);
  } finally {
    await closeAll(clients);
  }
});

test('an unknown WebSocket path is refused with HTTP 404', T, async () => {
  await assert.rejects(connect('/no-such-endpoint'), (err) => {
    assert.equal(err.statusCode, 404, String(err));
    return true;
  });
  // A prefix of an endpoint is not that endpoint.
  await assert.rejects(connect('/w'), (err) => err.statusCode === 404);
});

test('plain HTTP on the WebSocket port: 426 on an endpoint, 404 elsewhere', T, async () => {
  const http = (path) => fetch(wsUrl(path).replace('ws:', 'http:'), { signal: AbortSignal.timeout(5000) });
  const known = await http(EP.compressed);
  await known.arrayBuffer();
  assert.equal(known.status, 426);
  const unknown = await http('/nothing-here');
  await unknown.arrayBuffer();
  assert.equal(unknown.status, 404);
});

test('control API: unknown path 404, wrong method 405 with Allow, health and metrics', T, async () => {
  const missing = await control('GET', '/no-such-command');
  assert.equal(missing.status, 404);

  const wrong = await control('GET', '/send?x=1');
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.get('allow'), 'POST');
  const wrong2 = await control('POST', '/status', { body: '' });
  assert.equal(wrong2.status, 405);
  assert.equal(wrong2.headers.get('allow'), 'GET');

  const health = await control('GET', '/healthz');
  assert.equal(health.status, 200);
  assert.equal(health.text, 'ok\n');
  const ready = await control('GET', '/readyz');
  assert.equal(ready.status, 200);
  assert.equal(ready.text, 'ready\n');

  const metrics = await control('GET', '/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.headers.get('content-type'), /^text\/plain/);
  assert.match(metrics.text, /^# (HELP|TYPE) /m, 'Prometheus text format');
});
