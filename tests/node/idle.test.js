'use strict';
// idle_timeout_s (5 s in run.sh's config): a quiet client is pinged at half the timeout and closed
// with 1001 "idle timeout" at the timeout, unless it shows signs of life.

const { describe, it: test } = require('node:test');
const assert = require('node:assert/strict');
const { EP, IDLE_TIMEOUT_MS, connect, sleep } = require('./lib/gw');

// The three wait out the timeout side by side.
describe('idle timeout', { concurrency: true }, () => {
  test('a silent client that ignores pings is pinged, then closed 1001 "idle timeout"', { timeout: IDLE_TIMEOUT_MS + 15000 }, async () => {
    const c = await connect(EP.plain, { autoPong: false });
    try {
      let pings = 0;
      c.ws.on('ping', () => pings++);
      const start = Date.now();
      const { code, reason } = await c.closeInfo(IDLE_TIMEOUT_MS + 5000);
      const waited = Date.now() - start;
      assert.equal(code, 1001);
      assert.equal(reason, 'idle timeout');
      assert.ok(waited >= IDLE_TIMEOUT_MS - 1000, `closed after ${waited} ms, before the idle timeout`);
      assert.ok(pings >= 1, 'the daemon pings a quiet client before giving up on it');
    } finally {
      c.terminate();
    }
  });

  test(
    'a client that answers pings (as every client does) is not closed as idle',
    {
      timeout: IDLE_TIMEOUT_MS + 15000,
    },
    async () => {
      const c = await connect(EP.compressed); // `ws` answers pings by default (autoPong)
      try {
        let pings = 0;
        c.ws.on('ping', () => pings++);
        const closed = await Promise.race([c.closed, sleep(IDLE_TIMEOUT_MS + 2000).then(() => null)]);
        assert.ok(pings >= 1, 'pinged while quiet');
        assert.equal(closed, null, `closed ${JSON.stringify(closed)} though it answered every ping`);
      } finally {
        c.terminate();
      }
    },
  );

  test(
    'a client that sends pings is not closed as idle',
    {
      timeout: IDLE_TIMEOUT_MS + 15000,
    },
    async () => {
      const c = await connect(EP.plain, { autoPong: false });
      const timer = setInterval(() => c.ws.ping(Buffer.from('hi')), 500);
      try {
        const closed = await Promise.race([c.closed, sleep(IDLE_TIMEOUT_MS + 2000).then(() => null)]);
        assert.equal(closed, null, `closed ${JSON.stringify(closed)} though it pinged every 500 ms`);
      } finally {
        clearInterval(timer);
        c.terminate();
      }
    },
  );
});
