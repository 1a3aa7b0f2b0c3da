'use strict';
// For the node tests that start their own servers (cluster_node, routes_node): the wsgwd path
// from the command line, a visible skip when a server is missing, a temporary directory, child
// processes logged to files in it and stopped by PID whatever happens, free ports, bounded
// waits, and the clients (npm `ws`, fetch) they drive wsgwd with.
//
//   const h = require('../lib/procs')({ label: 'routes (node)', script: 'routes.js', needs: ['redis-server'] });
//
// Exit statuses the tests share: 0 passed, 1 failed, 2 bad usage, 77 a missing server (a
// failure under CI=true).

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const WebSocket = require(path.join(__dirname, '..', 'node_modules', 'ws'));

module.exports = function procs({ label, script, needs = [] }) {
  const sanitized = !['', 'none', undefined].includes(process.env.WSGW_SANITIZE);
  const SLOW = sanitized ? 3 : 1; // a sanitizer build runs several times slower
  const log = (msg) => console.error(`${label}: ${msg}`);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const wsgwd = process.argv[2];
  if (!wsgwd || !fs.existsSync(wsgwd)) {
    log(`usage: ${script} PATH/TO/wsgwd (got ${wsgwd})`);
    process.exit(2);
  }

  function missing(what) {
    if (/^(true|1|yes)$/i.test(process.env.CI || '')) {
      log(`FAIL: ${what} (CI=true: a missing prerequisite fails instead of skipping)`);
      process.exit(1);
    }
    log(`SKIP: ${what}`);
    process.exit(77);
  }
  for (const program of needs)
    if (spawnSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status !== 0)
      missing(`${program} is not installed (scripts/bootstrap installs it)`);

  const tmp = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), `wsgw-${path.basename(script, '.js')}-node-`));
  const children = new Set();

  function stopAll() {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) {
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.on('exit', stopAll);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(1));

  // Starts argv with its output in tmp/NAME.log; `exited` resolves with {code, signal}.
  function start(argv, name) {
    const out = fs.openSync(path.join(tmp, `${name}.log`), 'a');
    const c = spawn(argv[0], argv.slice(1), { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    children.add(c);
    c.exited = new Promise((resolve) => c.on('exit', (code, signal) => resolve({ code, signal })));
    return c;
  }

  const tail = (name) => {
    try {
      return fs.readFileSync(path.join(tmp, `${name}.log`), 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '(no log)';
    }
  };

  function freePorts(n) {
    return new Promise((resolve, reject) => {
      const servers = [];
      const next = () => {
        if (servers.length === n) {
          const ports = servers.map((s) => s.address().port);
          Promise.all(servers.map((s) => new Promise((r) => s.close(r)))).then(() => resolve(ports));
          return;
        }
        const s = net.createServer().listen(0, '127.0.0.1', next).on('error', reject);
        servers.push(s);
      };
      next();
    });
  }

  // Resolves with probe()'s first truthy value; throws after `ms` saying what it waited for.
  async function until(probe, ms, what, everyMs = 50) {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
      try {
        const v = await probe();
        if (v) return v;
      } catch (e) {
        last = e;
      }
      if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}${last ? ` (${last.message})` : ''}`);
      await sleep(everyMs);
    }
  }

  async function http(port, method, pathAndQuery, { body, accept } = {}) {
    const r = await fetch(`http://127.0.0.1:${port}${pathAndQuery}`, {
      method,
      body,
      headers: accept ? { accept } : {},
      signal: AbortSignal.timeout(10000 * SLOW),
    });
    return { status: r.status, text: await r.text(), headers: r.headers };
  }

  // An open WebSocket whose messages collect in ws.received (text as strings, binary as Buffers).
  function client(port, pathAndQuery) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${pathAndQuery}`);
      ws.received = [];
      ws.on('message', (data, isBinary) => ws.received.push(isBinary ? data : data.toString()));
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
      setTimeout(() => reject(new Error(`no WebSocket handshake from port ${port} within 5 s`)), 5000 * SLOW).unref();
    });
  }

  // A Redis stream entry's fields as an object.
  const fields = (entry) => {
    const o = {};
    for (let i = 0; i < entry[1].length; i += 2) o[entry[1][i]] = entry[1][i + 1];
    return o;
  };

  return { SLOW, sanitized, log, sleep, wsgwd, missing, tmp, children, start, tail, freePorts, until, http, client, fields };
};
