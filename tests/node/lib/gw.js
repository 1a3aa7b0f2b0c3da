'use strict';
// Helpers shared by the *.test.js files: the running wsgwd (started by run.sh), the control API,
// WebSocket clients from the npm `ws` package, and the daemon's event log (its stdout, one JSON
// line per event).
//
// Every test file runs in its own process and may run at the same time as the others against the
// same daemon, so a test never counts "everybody": it tags its own connections with a tag no
// other test uses (uniq()) and selects by that. Every wait here is bounded.

const fs = require('node:fs');
const crypto = require('node:crypto');
const { after } = require('node:test');
const WebSocket = require('ws');

// Every client this process opened; whatever a failing test left open is cut when the file's
// tests are done, so no open socket keeps the test process alive.
const opened = new Set();
after(() => {
  for (const ws of opened) ws.terminate();
});

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the tests through tests/node/run.sh`);
  return v;
}

const WS_PORT = Number(required('WSGW_WS_PORT'));
const CONTROL_PORT = Number(required('WSGW_CONTROL_PORT'));
const EVENTS_FILE = required('WSGW_EVENTS_FILE');
// The endpoints of the temporary config.yml run.sh writes (keep the two in step).
const EP = {
  compressed: '/ws', // compression on, json_extract_vars, max 2048 KiB
  plain: '/plain', // compression: false, max 64 KiB
};
const LIMIT = { compressed: 2048 * 1024, plain: 64 * 1024 };
const IDLE_TIMEOUT_MS = Number(process.env.WSGW_IDLE_TIMEOUT_S || 5) * 1000;

const wsUrl = (path) => `ws://127.0.0.1:${WS_PORT}${path}`;
const controlUrl = (pathAndQuery) => `http://127.0.0.1:${CONTROL_PORT}${pathAndQuery}`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A tag value no other test (or run) uses.
function uniq(prefix = 't') {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`;
}

// `promise`, or a rejection naming `what` after `ms`.
function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Polls `probe` (sync or async) until it returns a truthy value; that value, or an error after `ms`.
async function until(probe, ms, what, everyMs = 25) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(everyMs);
  }
}

// One control API request: { status, text, body (Buffer), headers }.
async function control(method, pathAndQuery, { body, contentType, accept, timeoutMs = 10000 } = {}) {
  const headers = {};
  if (contentType) headers['Content-Type'] = contentType;
  if (accept) headers.Accept = accept;
  const res = await fetch(controlUrl(pathAndQuery), {
    method,
    headers,
    body,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const buf = Buffer.from(await res.arrayBuffer());
  return { status: res.status, text: buf.toString('utf8'), body: buf, headers: res.headers };
}

// A POST that must answer 200 with a bare count; returns the count. The count body has no newline.
async function count(command, query, body, contentType) {
  const r = await control('POST', `/${command}?${query}`, {
    body,
    contentType: contentType ?? (command === 'settags' ? 'application/x-www-form-urlencoded' : undefined),
  });
  if (r.status !== 200) throw new Error(`POST /${command}?${query}: HTTP ${r.status}: ${r.text}`);
  if (!/^[0-9]+$/.test(r.text)) throw new Error(`POST /${command}?${query}: not a bare count: ${JSON.stringify(r.text)}`);
  return Number(r.text);
}

async function statusJson(query = '') {
  const r = await control('GET', `/status${query ? `?${query}` : ''}`, { accept: 'application/json' });
  if (r.status !== 200) throw new Error(`GET /status: HTTP ${r.status}: ${r.text}`);
  return JSON.parse(r.text);
}

const selector = (tags) => new URLSearchParams(tags).toString();

// A connected `ws` client that records what arrives, so tests can await the next message or the
// close without racing the event emitter.
class Client {
  constructor(ws, path, socket) {
    this.ws = ws;
    this.path = path;
    this.socket = socket; // the TCP socket, for bytesRead / bytesWritten on the wire
    this.localPort = socket.localPort;
    this.messages = []; // { data: Buffer, isBinary }
    this.waiters = [];
    this.id = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString('utf8') }));
    });
    ws.on('message', (data, isBinary) => {
      this.messages.push({ data: Buffer.isBuffer(data) ? data : Buffer.concat(data), isBinary });
      for (const w of this.waiters.splice(0)) w();
    });
    ws.on('error', () => {}); // reported through 'close'; tests assert on codes
  }

  get protocol() {
    return this.ws.protocol;
  }
  get extensions() {
    return this.ws.extensions;
  }
  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  // Resolves with the n-th message (0-based) once it has arrived.
  async message(n = 0, ms = 5000) {
    await within(
      ms,
      (async () => {
        while (this.messages.length <= n) await new Promise((r) => this.waiters.push(r));
      })(),
      `message #${n} on ${this.path} (got ${this.messages.length})`,
    );
    return this.messages[n];
  }

  send(data, options = {}) {
    return new Promise((resolve, reject) => this.ws.send(data, options, (err) => (err ? reject(err) : resolve())));
  }

  // The close the server sent (or the socket ending): { code, reason }.
  closeInfo(ms = 5000) {
    return within(ms, this.closed, `close of a client on ${this.path}`);
  }

  // Closes from our side and waits for the socket to be done; never throws.
  async close(ms = 3000) {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    try {
      this.ws.close(1000, 'test done');
      await within(ms, this.closed, 'client close');
    } catch {
      this.ws.terminate();
    }
  }

  // Cuts the TCP connection without a closing handshake.
  terminate() {
    this.ws.terminate();
  }
}

// Opens a WebSocket to `path`. options: protocols (array), and anything the `ws` client takes
// (perMessageDeflate, autoPong, ...). Rejects on any failure, with the HTTP status if there was one.
function connect(path, { protocols, ms = 5000, ...options } = {}) {
  return within(
    ms,
    new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl(path), protocols ?? [], options);
      opened.add(ws);
      ws.once('close', () => opened.delete(ws));
      let socket = null;
      ws.on('upgrade', (res) => {
        socket = res.socket;
      });
      ws.once('unexpected-response', (_req, res) => {
        const err = new Error(`unexpected response ${res.statusCode} for ${path}`);
        err.statusCode = res.statusCode;
        res.resume();
        ws.terminate();
        reject(err);
      });
      ws.once('error', reject);
      ws.once('open', () => resolve(new Client(ws, path, socket)));
    }),
    `connect to ${path}`,
  );
}

// The connection ids of `clients`, found through /status by their remote address (the daemon
// knows a connection by 127.0.0.1:<the client's local port>). Sets client.id.
async function resolveIds(clients, ms = 5000) {
  const pending = new Map(clients.filter((c) => !c.id).map((c) => [`127.0.0.1:${c.localPort}`, c]));
  await until(
    async () => {
      const st = await statusJson();
      for (const conn of st.connections) {
        const c = pending.get(conn.remote_addr);
        if (c) {
          c.id = conn.id;
          c.shard = conn.shard;
          pending.delete(conn.remote_addr);
        }
      }
      return pending.size === 0;
    },
    ms,
    `ids of ${pending.size} connections in /status`,
    50,
  );
  return clients.map((c) => c.id);
}

// Gives `clients` the tags (by id, in chunks to keep the query short); asserts every one was hit.
async function tagClients(clients, tags) {
  await resolveIds(clients);
  const body = new URLSearchParams(tags).toString();
  for (let i = 0; i < clients.length; i += 50) {
    const chunk = clients.slice(i, i + 50);
    const n = await count('settags', `id=${chunk.map((c) => c.id).join(',')}`, body);
    if (n !== chunk.length) throw new Error(`settags hit ${n} of ${chunk.length} connections`);
  }
}

// Connects `n` clients to `path` and tags them; `tags` must contain a tag unique to the test.
async function connectTagged(path, n, tags, options) {
  const clients = await Promise.all(Array.from({ length: n }, () => connect(path, options)));
  await tagClients(clients, tags);
  return clients;
}

async function closeAll(clients) {
  await Promise.all(clients.map((c) => c.close()));
}

// The daemon's event log, read incrementally (this process's view).
const events = {
  offset: 0,
  partial: '',
  list: [],
  read() {
    let fd;
    try {
      fd = fs.openSync(EVENTS_FILE, 'r');
    } catch {
      return;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      const n = fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const text = this.partial + buf.subarray(0, n).toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop();
      for (const line of lines) if (line) this.list.push(JSON.parse(line));
    } finally {
      fs.closeSync(fd);
    }
  },
  // Every event so far that satisfies `pred`.
  all(pred) {
    this.read();
    return this.list.filter(pred);
  },
  // The first event that satisfies `pred`, waiting for it up to `ms`.
  async find(pred, ms = 5000, what = 'an event') {
    return until(() => this.all(pred)[0], ms, `${what} in the event log`, 25);
  },
};

module.exports = {
  WebSocket,
  EP,
  LIMIT,
  IDLE_TIMEOUT_MS,
  wsUrl,
  controlUrl,
  sleep,
  uniq,
  within,
  until,
  control,
  count,
  statusJson,
  selector,
  connect,
  resolveIds,
  tagClients,
  connectTagged,
  closeAll,
  events,
};
