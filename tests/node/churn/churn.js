'use strict';
// The churn test's driver (started by tests/node/churn/run.sh, which runs wsgwd): waves of
// hundreds of concurrent `ws` clients, each playing one of the original gateway's scenarios,
// while a backend broadcasts to tag selectors, changes tags, closes by tag and reads /status,
// /tree and /metrics, all at once. Then, with every client gone, exact checks of what wsgwd kept
// and what it reported. Every loop and every wait is bounded.
//
// Phases: warm-up (a short churn, then drained: the RSS baseline is taken after it), the churn,
// the drain (clients finish, the backend stops), the checks.
//
// What is checked, and why it must hold:
//  - Each event in the log (wsgwd's stdout) has event_id one more than the one before (nothing
//    lost or duplicated between the shards and the sink); every open has exactly one close after
//    it, no close or message comes without an open, no message after its connection's close.
//  - Messages: each client sends "<key>:<n>" with n = 0, 1, 2, ... on one connection. For every
//    client, the message events of its connection must be exactly its first k messages, in order
//    (k >= 0; nothing reordered, duplicated or invented). For a client whose close handshake it
//    started itself and whose close frame came back as the echo of its own (code 4000+ and its key
//    as the reason), k must be every message it sent: the echo proves wsgwd read our close
//    frame, and every data frame we sent before it precedes it on the same TCP stream, so wsgwd
//    read them all while the connection was open (it reads until the close frame and sent no
//    close of its own, or our client would have reported that one instead). A client that was
//    cut by us (terminate, or aborted handshake) or closed by the backend's /close is checked only
//    for the prefix property: RFC 6455 lets wsgwd discard data after it sent its close frame, and a
//    TCP reset may discard bytes the server had not read yet.
//    The count of messages a client "sent" is what it passed to ws.send() while the socket was
//    OPEN; for the echoed clients each of those sends must also have completed without error (its
//    callback fired: the frame was handed to the kernel) — no send is counted that ws refused.
//  - Broadcasts: every text a client receives is "b<seq>" or, from /close, "bye<seq>"; one
//    backend loop issues /send and /close one after the other, each answered only after every
//    shard has queued it, so each client must see strictly increasing seq and nothing after bye.
//  - Close codes: a client sees its own echo, 1000 "Closed by server" (the backend's /close), or
//    1006 only when it cut the connection itself. Anything else (1008 slow consumer, 1001 idle,
//    1011, a close handshake that does not finish within 15 s, a failed connect) fails. A 1006
//    the client did not cause points at the closing handshake (tests/node/close_handshake.test.js
//    pins down that wsgwd waits for the client's close frame).
//  - After the drain: the daemon is alive; /status is empty (text: empty body; JSON: count 0, no
//    connections); /tree is empty (text and JSON); in /metrics connections_counter -
//    disconnections_counter == active_connections_gauge == 0 and every
//    wsgw_endpoint_connections is 0; the event log's opens == connections_counter, closes ==
//    disconnections_counter, messages == messages_recieved_counter, its lines ==
//    wsgw_events_published_total{sink="log",backend="event_log"}, wsgw_events_dropped_total == 0 and the backlog is
//    0; messages_sent_counter <= the sum of the backend's /send and /close counts; idle,
//    oversize, UTF-8 and inflate-stall closes are 0; clients that saw their open <= opens <=
//    clients started.
//  - wsgwd's RSS (VmRSS) at the end is below the post-warm-up baseline + --rss-slack-mb (30).
// Reported, not checked: scrapes during the churn where connections_counter -
// disconnections_counter != active_connections_gauge (the three are summed over the shards one
// after the other, so a scrape while connections come and go may see them disagree), and 503
// answers of the control API (a full shard inbox is allowed under load).
//
// Usage (run.sh sets the environment): node churn.js [--duration S] [--warmup S] [--clients N]
//   [--wave N] [--wave-interval-ms MS] [--report-interval S] [--rss-slack-mb MB] [--punch-holes]
// Environment: WSGW_WS_PORT, WSGW_CONTROL_PORT, WSGW_EVENTS_FILE, WSGWD_PID (set by run.sh), and
// WSGW_SANITIZE (meson's b_sanitize: other than none, the RSS bound is reported, not checked).
// Output: progress and the summary on stderr; on stdout only JSON lines: {"type":"rss",...} every
// --report-interval seconds (0: none) and one {"type":"summary",...} at the end.
// Exit code 0 when every check passed, 1 otherwise (each failure is printed, marked FAIL).

const fs = require('node:fs');
const { execFile } = require('node:child_process');
const WebSocket = require('ws');

// --- options --------------------------------------------------------------------------------

function parseArgs(argv) {
  const o = {
    duration: 45,
    warmup: 5,
    clients: 500,
    wave: 400,
    waveIntervalMs: 500,
    reportInterval: 5,
    rssSlackMb: 30,
    punchHoles: false,
  };
  const numeric = {
    '--duration': 'duration',
    '--warmup': 'warmup',
    '--clients': 'clients',
    '--wave': 'wave',
    '--wave-interval-ms': 'waveIntervalMs',
    '--report-interval': 'reportInterval',
    '--rss-slack-mb': 'rssSlackMb',
  };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a === '--punch-holes') o.punchHoles = true;
    else if (numeric[a] && i + 1 < argv.length && Number.isFinite(Number(argv[i + 1]))) o[numeric[a]] = Number(argv[++i]);
    else {
      console.error(`churn: unknown or incomplete option ${a}`);
      process.exit(2);
    }
  }
  return o;
}
const opt = parseArgs(process.argv.slice(2));

function required(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`churn: ${name} is not set: run this through tests/node/churn/run.sh`);
    process.exit(2);
  }
  return v;
}
const WS_PORT = Number(required('WSGW_WS_PORT'));
const CONTROL_PORT = Number(required('WSGW_CONTROL_PORT'));
const EVENTS_FILE = required('WSGW_EVENTS_FILE');
const WSGWD_PID = Number(required('WSGWD_PID'));
const SANITIZED = !['', 'none', undefined].includes(process.env.WSGW_SANITIZE);
// The endpoints of the config run.sh writes: both uncompressed, set_tags group=churn and ep=a|b.
const ENDPOINTS = ['/a', '/b'];
const ROOMS = 8;

// --- small helpers --------------------------------------------------------------------------

const t0 = Date.now();
const elapsedS = () => ((Date.now() - t0) / 1000).toFixed(1);
const log = (msg) => console.error(`churn [${elapsedS()} s]: ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = (n) => Math.floor(Math.random() * n);
const pick = (list) => list[rand(list.length)];

// Failures are collected, each printed once with FAIL; the first 20 of a kind in full.
const failures = new Map(); // kind -> { count, examples }
function fail(kind, detail) {
  let f = failures.get(kind);
  if (!f) failures.set(kind, (f = { count: 0, examples: [] }));
  f.count += 1;
  if (f.examples.length < 20) f.examples.push(detail);
}
function check(ok, kind, detail) {
  if (!ok) fail(kind, detail);
  return ok;
}

async function until(probe, ms, everyMs = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() >= deadline) return null;
    await sleep(everyMs);
  }
}

function alive() {
  try {
    process.kill(WSGWD_PID, 0);
    return true;
  } catch {
    return false;
  }
}

function rssKb() {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${WSGWD_PID}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

// --- the control API ------------------------------------------------------------------------

const api = { requests: 0, busy: 0, errors: 0 };

// One request: { status, text }; status 0 when the request itself failed.
async function control(method, pathAndQuery, { body, contentType, accept, timeoutMs = 15000 } = {}) {
  api.requests += 1;
  const headers = {};
  if (contentType) headers['Content-Type'] = contentType;
  if (accept) headers.Accept = accept;
  try {
    const res = await fetch(`http://127.0.0.1:${CONTROL_PORT}${pathAndQuery}`, {
      method,
      headers,
      body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { status: res.status, text: await res.text() };
  } catch (e) {
    return { status: 0, text: String(e && e.message) };
  }
}

// A command answering a bare count: the count, or null after a 503 (busy: a shard's inbox was
// full, which a loaded machine may see; counted and reported). Anything else fails.
async function command(name, query, body, contentType) {
  const r = await control('POST', `/${name}?${query}`, {
    body,
    contentType: contentType ?? (name === 'settags' ? 'application/x-www-form-urlencoded' : 'text/plain'),
  });
  if (r.status === 503) {
    api.busy += 1;
    return null;
  }
  if (r.status !== 200 || !/^[0-9]+$/.test(r.text)) {
    api.errors += 1;
    fail('control API answered wrongly', `POST /${name}?${query.slice(0, 80)}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
    return null;
  }
  return Number(r.text);
}

async function statusJson(query = '') {
  const r = await control('GET', `/status${query ? `?${query}` : ''}`, { accept: 'application/json' });
  if (r.status !== 200) return null;
  try {
    return JSON.parse(r.text);
  } catch {
    fail('control API answered wrongly', `GET /status (JSON): not JSON: ${r.text.slice(0, 200)}`);
    return null;
  }
}

// /metrics as { name or name{labels}: value }.
async function metrics() {
  const r = await control('GET', '/metrics');
  if (r.status !== 200) return null;
  const out = {};
  for (const line of r.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(\S+)/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}
const sumMetric = (m, prefix) =>
  Object.entries(m)
    .filter(([k]) => k === prefix || k.startsWith(`${prefix}{`))
    .reduce((s, [, v]) => s + v, 0);

// --- the event log (wsgwd's stdout), read as it grows ----------------------------------------

// Per-client message bookkeeping, matched by client key: what the client says it sent (from
// when it finishes) against what the log shows (from when its connection's close is logged).
const expected = new Map(); // key -> { attempted, sentOk, graceful, scenario }
const observed = new Map(); // key -> { n, id }
const msgStats = { graceful: 0, gracefulMessages: 0, ungracefulSent: 0, ungracefulLogged: 0 };

// Clients that saw an unexpected close: their connection ids, once the log shows them, are
// printed to help find them in the event log and wsgwd's log.
const suspects = new Set();

function reconcile(key) {
  const exp = expected.get(key);
  const obs = observed.get(key);
  if (!exp || !obs) return;
  if (suspects.delete(key))
    log(`client ${key} (unexpected close) was connection ${obs.id}: ${obs.n} of its ${exp.attempted} messages logged; ` +
      `its open event at ${obs.openTime - exp.startedAt} ms, its close event at ${obs.closeTime - exp.startedAt} ms`);
  expected.delete(key);
  observed.delete(key);
  check(
    obs.n <= exp.attempted,
    'the log has more messages from a client than it sent',
    `client ${key} (${exp.scenario}) sent ${exp.attempted}, connection ${obs.id} logged ${obs.n}`,
  );
  if (exp.graceful) {
    msgStats.gracefulMessages += obs.n;
    check(
      obs.n === exp.attempted && exp.sentOk === exp.attempted,
      'LOST MESSAGE: a message a client sent before its own close is missing from the event log',
      `client ${key} (${exp.scenario}): sent ${exp.attempted} (${exp.sentOk} confirmed by ws), ` +
        `its close was echoed, connection ${obs.id} logged ${obs.n}`,
    );
  } else {
    msgStats.ungracefulSent += exp.attempted;
    msgStats.ungracefulLogged += obs.n;
  }
}

const eventLog = {
  offset: 0,
  partial: '',
  lines: 0,
  lastId: null,
  actions: { open: 0, close: 0, message: 0 },
  conns: new Map(), // connection id -> { key, next, endpoint } while open in the log
  consumed: 0, // bytes parsed, for --punch-holes

  // Reads whatever was appended since the last call (in bounded chunks).
  read() {
    let fd;
    try {
      fd = fs.openSync(EVENTS_FILE, 'r');
    } catch {
      return;
    }
    try {
      const chunk = Buffer.alloc(4 << 20);
      for (;;) {
        const n = fs.readSync(fd, chunk, 0, chunk.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        const text = this.partial + chunk.subarray(0, n).toString('utf8');
        const lines = text.split('\n');
        this.partial = lines.pop();
        for (const line of lines) if (line) this.handle(line);
        this.consumed = this.offset - Buffer.byteLength(this.partial);
        if (n < chunk.length) break;
      }
    } finally {
      fs.closeSync(fd);
    }
  },

  handle(line) {
    this.lines += 1;
    let ev;
    try {
      ev = JSON.parse(line);
    } catch {
      fail('event log: a line is not JSON', line.slice(0, 200));
      return;
    }
    if (this.lastId !== null)
      check(ev.event_id === this.lastId + 1, 'event log: event_id not one more than the previous one',
        `${ev.event_id} after ${this.lastId}`);
    this.lastId = ev.event_id;
    check(ENDPOINTS.includes(ev.endpoint), 'event log: unknown endpoint', line.slice(0, 200));
    const id = ev.connection;
    const c = this.conns.get(id);
    switch (ev.action) {
      case 'open':
        this.actions.open += 1;
        if (!check(!c, 'event log: a second open for a connection', `${id} (event ${ev.event_id})`)) return;
        this.conns.set(id, { key: null, next: 0, endpoint: ev.endpoint, openTime: ev.time });
        return;
      case 'message': {
        this.actions.message += 1;
        if (!check(c, 'event log: a message without an open before it (or after the close)', `${id} (event ${ev.event_id})`))
          return;
        const m = /^(c\d+):(\d+)$/.exec(ev.message ?? '');
        if (!check(ev.type === 'text' && m, 'event log: a message that no client sent', line.slice(0, 200))) return;
        const [, key, n] = m;
        if (c.key === null) c.key = key;
        check(c.key === key, 'event log: messages of two clients on one connection', `${id}: ${c.key} and ${key}`);
        check(Number(n) === c.next, 'event log: a client\'s messages out of order, duplicated or with a gap',
          `${id} (client ${key}): expected :${c.next}, got :${n}`);
        c.next = Number(n) + 1;
        return;
      }
      case 'close':
        this.actions.close += 1;
        if (!check(c, 'event log: a close without an open (or a second close)', `${id} (event ${ev.event_id})`)) return;
        check(ev.endpoint === c.endpoint, 'event log: close on another endpoint than the open', id);
        this.conns.delete(id);
        if (c.key !== null) {
          observed.set(c.key, { n: c.next, id, openTime: c.openTime, closeTime: ev.time });
          reconcile(c.key);
        }
        return;
      default:
        fail('event log: unknown action', line.slice(0, 200));
    }
  },
};

// Frees the disk blocks of the part of the log already read (a soak writes gigabytes); the
// file keeps its size (sparse), so wsgwd's offset and ours stay valid.
function punchHoles() {
  const length = Math.floor(eventLog.consumed / 65536) * 65536;
  if (length <= 0) return Promise.resolve();
  return new Promise((resolve) =>
    execFile('fallocate', ['--punch-hole', '--offset', '0', '--length', String(length), EVENTS_FILE], (err) => {
      if (err && !punchHoles.warned) {
        punchHoles.warned = true;
        log(`fallocate --punch-hole failed (${err.message}); the event log keeps its disk space`);
      }
      resolve();
    }),
  );
}

// --- clients --------------------------------------------------------------------------------

const SCENARIOS = ['connect-disconnect', 'send-one-close', 'flood-10', 'send-close-instantly', 'wait-close', 'send-every-second'];
const clientStats = {
  started: 0,
  opened: 0,
  finished: 0,
  live: 0,
  received: 0,
  byScenario: Object.fromEntries(SCENARIOS.map((s) => [s, 0])),
  outcomes: {}, // 'echo', 'server-close', 'cut-by-us', ... -> count
};
let nextKey = 0;
const CLOSE_WAIT_MS = 15000;

// One client playing `scenario`; resolves when it is done (never rejects). Bounded: the longest
// scenario lasts 5 s of sending, a close handshake 15 s, a connect 10 s.
function runClient(scenario) {
  const key = `c${nextKey++}`;
  const scenarioIndex = SCENARIOS.indexOf(scenario);
  const ourCode = 4000 + scenarioIndex;
  clientStats.started += 1;
  clientStats.live += 1;
  clientStats.byScenario[scenario] += 1;
  const st = {
    startedAt: Date.now(),
    openedAt: 0,
    closeSentAt: 0,
    localPort: null,
    received: 0,
    attempted: 0,
    sentOk: 0,
    sendErrors: 0,
    opened: false,
    cutByUs: false,
    closeStarted: false,
    lastSeq: -1,
    bye: false,
    error: null,
  };
  const ws = new WebSocket(`ws://127.0.0.1:${WS_PORT}${pick(ENDPOINTS)}`, { perMessageDeflate: false, handshakeTimeout: 10000 });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', (e) => {
    st.error ??= e.code || e.message;
  });
  ws.on('unexpected-response', (_req, res) => {
    st.error ??= `HTTP ${res.statusCode}`;
    res.resume();
    ws.terminate();
  });
  ws.on('upgrade', (res) => {
    st.localPort = res.socket.localPort;
  });
  ws.on('message', (data, isBinary) => {
    clientStats.received += 1;
    st.received += 1;
    const text = isBinary ? null : data.toString();
    const m = text && /^(b|bye)(\d+)$/.exec(text);
    if (!check(m, 'client: received a message no one sent', `client ${key}: ${isBinary ? 'binary' : text?.slice(0, 60)}`))
      return;
    const seq = Number(m[2]);
    check(!st.bye, 'client: received a message after the /close body', `client ${key}: ${text} after bye`);
    check(seq > st.lastSeq, 'client: broadcasts out of order or twice', `client ${key}: ${text} after #${st.lastSeq}`);
    st.lastSeq = seq;
    if (m[1] === 'bye') st.bye = true;
  });

  const sendOne = () =>
    new Promise((resolve) => {
      if (ws.readyState !== WebSocket.OPEN) return resolve(false);
      const n = st.attempted++;
      ws.send(`${key}:${n}`, (err) => {
        if (err) st.sendErrors += 1;
        else st.sentOk += 1;
        resolve(!err);
      });
    });
  const closeOurs = () => {
    if (ws.readyState !== WebSocket.OPEN) return;
    st.closeStarted = true;
    st.closeSentAt = Date.now();
    ws.close(ourCode, key);
  };
  const cut = () => {
    st.cutByUs = true;
    ws.terminate();
  };

  const opened = new Promise((resolve) => {
    ws.once('open', () => {
      st.opened = true;
      st.openedAt = Date.now();
      clientStats.opened += 1;
      resolve(true);
    });
    closed.then(() => resolve(false));
  });

  const play = async () => {
    if (scenario === 'connect-disconnect') {
      // Connect and disconnect at once: a close handshake right at open, a TCP cut right at
      // open, or giving up while the handshake is still going on.
      const how = rand(4);
      if (how === 0) {
        setTimeout(cut, rand(3)); // before open (or just after), ws aborts the handshake
        return;
      }
      if (!(await opened)) return;
      if (how === 1) cut();
      else closeOurs();
      return;
    }
    if (!(await opened)) return;
    switch (scenario) {
      case 'send-one-close':
        await sendOne();
        closeOurs();
        break;
      case 'flood-10': {
        const sends = [];
        for (let i = 0; i < 10; ++i) sends.push(sendOne());
        await Promise.all(sends);
        closeOurs();
        break;
      }
      case 'send-close-instantly':
        sendOne(); // the close follows in the same tick: on the wire right behind the message
        closeOurs();
        break;
      case 'wait-close':
        await sleep(rand(3001));
        closeOurs();
        break;
      case 'send-every-second': {
        const n = 1 + rand(5);
        for (let i = 0; i < n && ws.readyState === WebSocket.OPEN; ++i) {
          if (i > 0) await sleep(1000);
          await sendOne();
        }
        closeOurs();
        break;
      }
    }
  };

  return (async () => {
    try {
      await play();
    } catch (e) {
      fail('client: scenario threw', `client ${key} (${scenario}): ${e && e.stack}`);
    }
    let result = await Promise.race([closed, sleep(CLOSE_WAIT_MS).then(() => null)]);
    if (!result) {
      if (ws.readyState !== WebSocket.CLOSED)
        fail('client: the connection did not close within 15 s', `client ${key} (${scenario}), readyState ${ws.readyState}, closeStarted ${st.closeStarted}`);
      ws.terminate();
      result = await Promise.race([closed, sleep(2000).then(() => ({ code: -1, reason: '' }))]);
    }
    let outcome;
    const graceful = st.closeStarted && result.code === ourCode && result.reason === key;
    if (graceful) outcome = 'echo';
    else if (result.code === 1000 && result.reason === 'Closed by server') outcome = 'server-close';
    else if (result.code === 1006 && st.cutByUs) outcome = 'cut-by-us';
    else if (!st.opened && scenario === 'connect-disconnect' && st.cutByUs) outcome = 'cut-by-us';
    else {
      outcome = `unexpected ${result.code}`;
      const at = (t) => (t ? `${t - st.startedAt} ms` : '-');
      // A 1006 we did not cause: a server that closes the TCP connection right after its close
      // frame, instead of waiting for the client's, makes a client that was still sending get a
      // reset that takes the unread close frame, and the /close body, with it
      // (close_handshake.test.js checks the handshake from a raw socket).
      const kind = result.code === 1006
        ? 'client: unexpected close: 1006 though the client did not cut (closing handshake, see tests/node/close_handshake.test.js)'
        : 'client: unexpected close';
      fail(kind, `client ${key} (${scenario}) from port ${st.localPort}: code ${result.code} ` +
        `"${result.reason}", error ${st.error}; opened at ${at(st.openedAt)}, our close sent at ${at(st.closeSentAt)}, ` +
        `closed at ${at(Date.now())}; sent ${st.attempted} (${st.sentOk} confirmed), received ${st.received}` +
        `${st.bye ? ' (last: bye)' : ''}`);
      suspects.add(key);
    }
    clientStats.outcomes[outcome] = (clientStats.outcomes[outcome] ?? 0) + 1;
    if (st.attempted > 0) {
      expected.set(key, { attempted: st.attempted, sentOk: st.sentOk, graceful, scenario, startedAt: st.startedAt });
      if (graceful) msgStats.graceful += 1;
      reconcile(key);
    }
    clientStats.live -= 1;
    clientStats.finished += 1;
  })();
}

// Starts waves of clients until `stopAt`: every --wave-interval-ms up to --wave clients at once,
// never more than --clients alive. Resolves when every client it started has finished.
async function churnClients(stopAt) {
  const running = new Set();
  while (Date.now() < stopAt) {
    const n = Math.min(opt.wave, opt.clients - clientStats.live);
    for (let i = 0; i < n; ++i) {
      const p = runClient(pick(SCENARIOS));
      running.add(p);
      p.then(() => running.delete(p));
    }
    await sleep(Math.min(opt.waveIntervalMs, Math.max(0, stopAt - Date.now())));
  }
  await Promise.all(running);
}

// --- the backend ----------------------------------------------------------------------------

const backend = { skewedScrapes: 0, sends: 0, queued: 0, closes: 0, closed: 0, settags: 0, tagged: 0, reads: 0, seq: 0 };
const room = () => `r${rand(ROOMS)}`;
let recentIds = []; // connection ids from the tagger's last /status

// /send and /close one after the other (see the header: this order is what clients check).
async function sender(stopAt) {
  let nextClose = Date.now() + 1500;
  while (Date.now() < stopAt) {
    const seq = backend.seq++;
    if (Date.now() >= nextClose) {
      nextClose = Date.now() + 1000 + rand(1000);
      // By tag mostly; sometimes a few connections by id (from the tagger's last /status).
      const ids = recentIds.filter(() => Math.random() < 0.05).slice(0, 20);
      const query = ids.length && rand(3) === 0 ? `id=${ids.join(',')}` : `room=${room()}&ep=${pick(['a', 'b'])}`;
      const n = await command('close', query, `bye${seq}`);
      if (n !== null) {
        backend.closes += 1;
        backend.closed += n;
        backend.queued += n;
      }
    } else {
      const r = rand(100);
      const query =
        r < 10 ? 'group=churn' : r < 60 ? `room=${room()}` : r < 75 ? `ep=a&room=${room()}` : r < 85 ? `phase=p${rand(3)}`
          : r < 95 ? 'vip=1' : `room=${room()}&vip=1`;
      const n = await command('send', query, `b${seq}`);
      if (n !== null) {
        backend.sends += 1;
        backend.queued += n;
      }
    }
    await sleep(5 + rand(35));
  }
}

// Tags added, changed and deleted, by id and by tag.
async function tagger(stopAt) {
  let phase = 0;
  while (Date.now() < stopAt) {
    const op = rand(6);
    let n = null;
    if (op <= 1) {
      // Some of the current connections by id: into a room, sometimes vip too.
      const st = await statusJson('group=churn');
      recentIds = (st?.connections ?? []).map((c) => c.id);
      const ids = recentIds.filter(() => Math.random() < 0.3).slice(0, 50);
      if (ids.length) n = await command('settags', `id=${ids.join(',')}`, op === 0 ? `room=${room()}` : `room=${room()}&vip=1`);
    } else if (op === 2) {
      n = await command('settags', `room=${room()}`, `room=${room()}`); // move a room
    } else if (op === 3) {
      n = await command('settags', `room=${room()}`, 'room='); // delete the tag
    } else if (op === 4) {
      phase = (phase + 1) % 3;
      n = await command('settags', 'group=churn', `phase=p${phase}`);
    } else {
      n = await command('settags', pick(['vip=1', `phase=p${rand(3)}`]), pick(['vip=', 'phase=', 'vip=&phase=']));
    }
    if (n !== null) {
      backend.settags += 1;
      backend.tagged += n;
    }
    await sleep(5 + rand(25));
  }
}

// Reads /status, /tree and /metrics and checks their shape while everything changes.
async function reader(stopAt) {
  let lastMetrics = null;
  while (Date.now() < stopAt) {
    const what = rand(5);
    if (what === 0) {
      const r = await control('GET', '/status');
      if (r.status === 200)
        check(r.text === '' || /^(id=[0-9a-f-]{36}( \S+=\S*)*\n)+$/.test(r.text), 'control API answered wrongly',
          `GET /status text: ${r.text.slice(0, 200)}`);
    } else if (what === 1) {
      const st = await statusJson();
      if (st) check(st.count === st.connections.length, 'control API answered wrongly', `GET /status JSON: count ${st.count} but ${st.connections.length} listed`);
    } else if (what === 2 || what === 3) {
      const r = await control('GET', '/tree', what === 3 ? { accept: 'application/json' } : {});
      if (r.status === 200 && what === 3) {
        try {
          JSON.parse(r.text);
        } catch {
          fail('control API answered wrongly', `GET /tree JSON: ${r.text.slice(0, 200)}`);
        }
      }
    } else {
      const m = await metrics();
      if (m) {
        // Not checked while connections come and go: each of the three is summed over the shards
        // at its own instant of the scrape (lock-free counters), so they need not agree; counted.
        if (m.connections_counter - m.disconnections_counter !== m.active_connections_gauge) backend.skewedScrapes += 1;
        if (lastMetrics)
          for (const k of ['connections_counter', 'disconnections_counter', 'messages_sent_counter', 'messages_recieved_counter'])
            check(m[k] >= lastMetrics[k], 'metrics inconsistent', `${k} went down: ${lastMetrics[k]} -> ${m[k]}`);
        lastMetrics = m;
      }
    }
    backend.reads += 1;
    await sleep(50 + rand(100));
  }
}

// --- phases ---------------------------------------------------------------------------------

// One churn of `seconds`: clients and backend together; resolves when all are done.
async function churn(seconds, onTick) {
  const stopAt = Date.now() + seconds * 1000;
  const ticker = setInterval(onTick, 1000);
  try {
    await Promise.all([churnClients(stopAt), sender(stopAt), tagger(stopAt), reader(stopAt)]);
  } finally {
    clearInterval(ticker);
  }
}

// The least-squares slope of [seconds, kB] samples, in kB per minute (null if too few): a leak
// shows as a steady climb in the second half of a soak, after the working set has settled.
function trend(samples) {
  // Over less than two minutes the allocator's ups and downs drown any slope.
  if (samples.length < 10 || samples[samples.length - 1][0] - samples[0][0] < 120) return null;
  const n = samples.length;
  const mx = samples.reduce((s, [x]) => s + x, 0) / n;
  const my = samples.reduce((s, [, y]) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const [x, y] of samples) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
  }
  return sxx > 0 ? Math.round((sxy / sxx) * 60 * 10) / 10 : null;
}

// Waits until wsgwd has no connection left and the log shows every open closed.
async function drained(ms) {
  return until(async () => {
    const m = await metrics();
    eventLog.read();
    return m && m.active_connections_gauge === 0 && eventLog.conns.size === 0 && eventLog.lines === m['wsgw_events_published_total{sink="log",backend="event_log"}'];
  }, ms, 100);
}

async function main() {
  const summary = { rss_kb: {} };
  const rssStart = rssKb();
  summary.rss_kb.start = rssStart;
  log(`wsgwd pid ${WSGWD_PID}, RSS at start ${rssStart} kB; warm-up ${opt.warmup} s, churn ${opt.duration} s, ` +
    `up to ${opt.clients} clients, waves of ${opt.wave} every ${opt.waveIntervalMs} ms`);

  let peak = rssStart ?? 0;
  const samples = []; // [seconds, kB] during the churn, for the trend
  let lastReport = Date.now();
  const report = async (phase) => {
    const rss = rssKb();
    if (rss !== null) peak = Math.max(peak, rss);
    if (rss !== null && phase === 'churn') samples.push([(Date.now() - t0) / 1000, rss]);
    eventLog.read();
    if (opt.punchHoles) await punchHoles();
    if (opt.reportInterval > 0 && Date.now() - lastReport >= opt.reportInterval * 1000 - 50) {
      lastReport = Date.now();
      console.log(JSON.stringify({
        type: 'rss', t_s: Number(elapsedS()), phase, rss_kb: rss, live_clients: clientStats.live,
        clients_started: clientStats.started, log_open_connections: eventLog.conns.size, events: eventLog.lines,
      }));
    }
  };

  // Warm-up: the allocator's arenas, the registries' tables, lws' pools grow to their working size.
  if (opt.warmup > 0) {
    await churn(opt.warmup, () => report('warmup'));
    check(await drained(30000), 'not drained after the warm-up', 'connections still open 30 s after the warm-up clients finished');
  }
  const rssBase = rssKb();
  summary.rss_kb.after_warmup = rssBase;
  log(`warm-up done: ${clientStats.started} clients; RSS ${rssBase} kB`);

  const churnStart = Date.now();
  await churn(opt.duration, () => report('churn'));
  summary.churn_s = (Date.now() - churnStart) / 1000;
  log(`churn done in ${summary.churn_s} s: ${clientStats.started} clients; draining`);

  const isDrained = await drained(30000);
  check(alive(), 'CRASH: wsgwd is not running after the churn', `pid ${WSGWD_PID}`);
  check(isDrained, 'LEAK: connections left after the churn', `30 s after the last client finished: ${eventLog.conns.size} open in the event log`);
  eventLog.read();
  const rssEnd = rssKb();
  summary.rss_kb.end = rssEnd;
  summary.rss_kb.peak = Math.max(peak, rssEnd ?? 0);
  summary.rss_kb.trend_kb_per_min = trend(samples.slice(Math.floor(samples.length / 2)));

  // /status and /tree: empty, text and JSON.
  const statusText = await control('GET', '/status');
  check(statusText.status === 200 && statusText.text === '', 'LEAK: /status not empty', `HTTP ${statusText.status}: ${statusText.text.slice(0, 500)}`);
  const st = await statusJson();
  check(st && st.count === 0 && Array.isArray(st.connections) && st.connections.length === 0, 'LEAK: /status not empty',
    `JSON: ${JSON.stringify(st)?.slice(0, 500)}`);
  const treeText = await control('GET', '/tree');
  check(treeText.status === 200 && treeText.text === '', 'LEAK: /tree not empty', `HTTP ${treeText.status}: ${treeText.text.slice(0, 500)}`);
  const treeJson = await control('GET', '/tree', { accept: 'application/json' });
  check(treeJson.status === 200 && treeJson.text.trim() === '{}', 'LEAK: /tree not empty', `JSON: HTTP ${treeJson.status}: ${treeJson.text.slice(0, 500)}`);

  // Metrics against each other and against the log.
  const m = (await metrics()) ?? {};
  const mv = (k) => m[k] ?? NaN;
  summary.metrics = Object.fromEntries(
    ['connections_counter', 'disconnections_counter', 'active_connections_gauge', 'messages_recieved_counter',
      'messages_sent_counter', 'wsgw_frames_dropped_total', 'wsgw_slow_consumer_closes_total',
      'wsgw_commands_busy_total', 'wsgw_upgrades_refused_total'].map((k) => [k, mv(k)]),
  );
  check(mv('connections_counter') - mv('disconnections_counter') === 0 && mv('active_connections_gauge') === 0,
    'COUNTS: connections_counter - disconnections_counter == active_connections_gauge == 0',
    `${mv('connections_counter')} - ${mv('disconnections_counter')}, gauge ${mv('active_connections_gauge')}`);
  check(sumMetric(m, 'wsgw_endpoint_connections') === 0, 'COUNTS: wsgw_endpoint_connections not 0',
    JSON.stringify(Object.entries(m).filter(([k]) => k.startsWith('wsgw_endpoint_connections'))));
  check(eventLog.actions.open === mv('connections_counter'), 'COUNTS: open events != connections_counter',
    `${eventLog.actions.open} != ${mv('connections_counter')}`);
  check(eventLog.actions.close === mv('disconnections_counter'), 'COUNTS: close events != disconnections_counter',
    `${eventLog.actions.close} != ${mv('disconnections_counter')}`);
  check(eventLog.actions.message === mv('messages_recieved_counter'), 'COUNTS: message events != messages_recieved_counter',
    `${eventLog.actions.message} != ${mv('messages_recieved_counter')}`);
  check(eventLog.lines === mv('wsgw_events_published_total{sink="log",backend="event_log"}'), 'LOST EVENT: log lines != wsgw_events_published_total',
    `${eventLog.lines} != ${mv('wsgw_events_published_total{sink="log",backend="event_log"}')}`);
  check(sumMetric(m, 'wsgw_events_dropped_total') === 0 && sumMetric(m, 'wsgw_event_backlog') === 0,
    'LOST EVENT: events dropped or still in the backlog',
    `dropped ${sumMetric(m, 'wsgw_events_dropped_total')}, backlog ${sumMetric(m, 'wsgw_event_backlog')}`);
  check(mv('messages_sent_counter') <= backend.queued, 'COUNTS: more messages sent than queued',
    `messages_sent_counter ${mv('messages_sent_counter')} > ${backend.queued} counted by /send and /close`);
  check(clientStats.received <= mv('messages_sent_counter'), 'COUNTS: clients received more than wsgwd sent',
    `${clientStats.received} > ${mv('messages_sent_counter')}`);
  for (const k of ['wsgw_idle_closes_total', 'wsgw_oversize_closes_total', 'wsgw_invalid_utf8_closes_total', 'wsgw_inflate_stalls_total'])
    check(mv(k) === 0, 'COUNTS: a close that nothing here should cause', `${k} = ${mv(k)}`);
  check(clientStats.opened <= eventLog.actions.open && eventLog.actions.open <= clientStats.started,
    'COUNTS: clients opened <= open events <= clients started',
    `${clientStats.opened} <= ${eventLog.actions.open} <= ${clientStats.started}`);
  check(eventLog.conns.size === 0, 'LEAK: an open without a close in the event log',
    [...eventLog.conns.keys()].slice(0, 20).join(' '));

  // The clients' messages that the log never showed at all.
  for (const [key, exp] of expected) {
    if (exp.graceful)
      fail('LOST MESSAGE: a message a client sent before its own close is missing from the event log',
        `client ${key} (${exp.scenario}): sent ${exp.attempted} (${exp.sentOk} confirmed by ws), its close was echoed, ` +
          'the log has no message from it');
    else msgStats.ungracefulSent += exp.attempted;
  }
  for (const [key, obs] of observed) fail('event log: messages from a client that never finished', `${key} on ${obs.id}`);

  // RSS. A sanitized wsgwd keeps freed memory in quarantine (ASan): reported, not checked.
  const rssOk = rssEnd !== null && rssBase !== null && rssEnd < rssBase + opt.rssSlackMb * 1024;
  const rssWhy = `RSS ${rssEnd} kB at the end, ${rssBase} kB after the warm-up (allowed: + ${opt.rssSlackMb} MB)`;
  if (SANITIZED) log(`${rssWhy}: not checked, wsgwd is built with -Db_sanitize=${process.env.WSGW_SANITIZE}`);
  else check(rssOk, 'LEAK: RSS did not come back', rssWhy);
  summary.rss_ok = rssOk;

  Object.assign(summary, {
    type: 'summary',
    run_s: (Date.now() - t0) / 1000,
    clients: { ...clientStats },
    events: { lines: eventLog.lines, ...eventLog.actions },
    messages: msgStats,
    backend: { ...backend, ...api },
    failures: Object.fromEntries([...failures].map(([k, v]) => [k, v.count])),
  });
  delete summary.clients.live;
  console.log(JSON.stringify(summary));
  log(`clients: ${clientStats.started} started, ${clientStats.opened} opened, outcomes ${JSON.stringify(clientStats.outcomes)}, ` +
    `${clientStats.received} broadcasts received`);
  log(`events: ${eventLog.lines} (${eventLog.actions.open} open, ${eventLog.actions.close} close, ${eventLog.actions.message} message); ` +
    `${msgStats.graceful} clients closed with their echo, all ${msgStats.gracefulMessages} of their messages logged; ` +
    `server-closed/cut clients: ${msgStats.ungracefulLogged} of ${msgStats.ungracefulSent} messages logged`);
  log(`backend: ${backend.sends} sends queued ${backend.queued} frames, ${backend.closes} closes (${backend.closed} connections), ` +
    `${backend.settags} settags (${backend.tagged} hits), ${backend.reads} reads, ${api.busy} busy answers; ` +
    `${backend.skewedScrapes} scrapes during the churn where connections - disconnections != active`);
  log(`RSS: start ${rssStart} kB, after warm-up ${rssBase} kB, peak ${summary.rss_kb.peak} kB, end ${rssEnd} kB; ` +
    `second half of the churn: ${summary.rss_kb.trend_kb_per_min ?? '-'} kB/min`);
  if (failures.size === 0) {
    log('every check passed');
    return 0;
  }
  for (const [kind, f] of failures) {
    console.error(`FAIL: ${kind} (${f.count}x)`);
    for (const e of f.examples) console.error(`    ${e}`);
  }
  return 1;
}

main().then(
  (rc) => process.exit(rc),
  (e) => {
    console.error(`churn: ${e && e.stack}`);
    process.exit(1);
  },
);
