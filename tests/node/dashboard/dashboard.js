'use strict';
// The meson test `dashboard_node` (suite `node`): GET /dashboard in a real headless Chromium
// (npm puppeteer-core driving Debian's chromium) against a real wsgwd with a control token, and
// npm `ws` clients. Checks, in order:
//   1. The control API: /dashboard is served without the token (and carries its CSP); /v1/stream
//      wants it (401); with it, /v1/stream is text/event-stream, no-store, and its first event
//      comes at once; the 17th stream at once is refused 503 (at most 16).
//   2. The page at 1280x800 asks for the token (the stream answered 401); once it is entered the
//      stream goes live and `data-metric="connections"` reads 0.
//   3. Three `ws` clients connect (tags from a JWT in the query: group a, a, b; user u1..u3): the counter
//      goes 0 -> 3 without a reload, the endpoint and node tables follow, the tag tree lists
//      group a (2), group b (1) and the users.
//   4. The send form, selector {"all":{"group":"a"}}: the answer says 2, exactly u1 and u2 get the
//      message, u3 nothing; the same by keyboard alone (Tab, Enter); every control has an
//      accessible name and every section a heading; binary (base64) to u3 arrives as those bytes.
//   5. The search lists the three connections. While u1 and u2 send, messages in/s rises; a
//      screenshot at 1280 px wide (docs/dashboard.png, or WSGW_DASHBOARD_SCREENSHOT). A bad
//      selector in the send form shows the server's error. Close on u3's row closes u3 (its
//      client sees the close) and the counter drops to 2.
//   6. No console errors and no page errors (except the HTTP 401/400 the test provokes on
//      purpose), no horizontal scroll at 1280 px nor at 390 px.
//   7. SIGTERM with the page's stream open: wsgwd exits 0 within 5 s (streams end at stop()).
// Every wait is bounded; wsgwd and the browser are stopped by PID whatever happens.
//
// Usage: WSGW_CHROMIUM=/usr/bin/chromium node tests/node/dashboard/dashboard.js PATH/TO/wsgwd
// (through run.sh). Exit status: 0 passed, 1 failed, 77 chromium missing (a failure under CI=true).

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { SLOW, log, sleep, wsgwd, missing, tmp, children, start, tail, freePorts, until, client } = require('../lib/procs')({
  label: 'dashboard (node)',
  script: 'dashboard.js',
});
const puppeteer = require(path.join(__dirname, '..', 'node_modules', 'puppeteer-core'));

const chromium = process.env.WSGW_CHROMIUM || '';
if (!chromium || !fs.existsSync(chromium)) missing(`chromium is not installed (WSGW_CHROMIUM=${chromium}; scripts/bootstrap installs it)`);
const screenshotPath = process.env.WSGW_DASHBOARD_SCREENSHOT || path.join(__dirname, '..', '..', '..', 'docs', 'dashboard.png');
const TOKEN = 'dash-test-token-0123456789';
const WAIT = 10000 * SLOW;

let browser = null;

// Connections get their tags at the upgrade from a JWT in the query (the endpoints' jwt,
// claims_to_tags): an HS256 token over `claims`.
const JWT_SECRET = crypto.randomBytes(32).toString('hex');
function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${crypto.createHmac('sha256', JWT_SECRET).update(body).digest('base64url')}`;
}

async function main() {
  const [wsPort, controlPort] = await freePorts(2);
  const config = path.join(tmp, 'wsgwd.yml');
  const secret = path.join(tmp, 'jwt.key');
  fs.writeFileSync(secret, JWT_SECRET);
  const jwtBlock = [`    jwt: {hs256_secret_file: '${secret}', claims_to_tags: {group: group, user: user}}`];
  fs.writeFileSync(config, [
    '# Written by tests/node/dashboard/dashboard.js',
    `listen_addr: 127.0.0.1:${wsPort}`,
    `control_addr: 127.0.0.1:${controlPort}`,
    `control_token: ${TOKEN}`,
    'threads: 2',
    'drain_s: 0',
    'event_log: stdout',
    'endpoints:',
    '  - path: /ws',
    ...jwtBlock,
    '  - path: /other',
    ...jwtBlock,
    '',
  ].join('\n'));
  const gw = start([wsgwd, '--config', config], 'wsgwd');
  const base = `http://127.0.0.1:${controlPort}`;
  const auth = { authorization: `Bearer ${TOKEN}` };
  // Every request is bounded; a stream's own controller may end it sooner.
  const get = (p, headers = {}, signal = null) =>
    fetch(base + p, { headers, signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(WAIT)]) : AbortSignal.timeout(WAIT) });
  await until(async () => (await get('/readyz')).status === 200, 15000 * SLOW, `wsgwd ready (log:\n${tail('wsgwd')})`);

  // 1. the control API's side
  const page0 = await get('/dashboard');
  assert.equal(page0.status, 200, '/dashboard needs no token');
  assert.match(page0.headers.get('content-type'), /^text\/html/);
  assert.match(page0.headers.get('content-security-policy') || '', /default-src 'none'/);
  assert.match(await page0.text(), /data-metric="connections"/);
  assert.equal((await get('/v1/stream')).status, 401, '/v1/stream wants the token');
  assert.equal((await get('/v1/count?selector=%7B%7D')).status, 401, 'the data calls want the token');
  const streams = [];
  try {
    const first = new AbortController();
    const t0 = Date.now();
    const r = await get('/v1/stream', auth, first.signal);
    streams.push(first);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'text/event-stream');
    assert.equal(r.headers.get('cache-control'), 'no-store');
    const reader = r.body.getReader();
    let text = '';
    const dec = new TextDecoder();
    while (!text.includes('\n\n')) {
      const { value, done } = await Promise.race([reader.read(), sleep(WAIT).then(() => ({ done: true }))]);
      if (done) break;
      text += dec.decode(value, { stream: true });
    }
    assert.ok(Date.now() - t0 < 2000 * SLOW, 'the first event comes at once');
    const event = JSON.parse(text.slice(0, text.indexOf('\n\n')).replace(/^data: /, ''));
    for (const k of ['ts', 'connections', 'endpoints', 'nodes', 'connects', 'disconnects', 'messages_in', 'messages_out'])
      assert.ok(k in event, `the event has ${k}: ${text}`);
    assert.deepEqual(Object.keys(event.endpoints).sort(), ['/other', '/ws']);
    // 15 more fit (16 in all); the 17th is refused. Each response stays referenced: fetch
    // cancels (closes) the body of one that is garbage-collected.
    const held = [r];
    for (let i = 1; i < 16; i++) {
      const a = new AbortController();
      const s = await get('/v1/stream', auth, a.signal);
      streams.push(a);
      held.push(s);
      assert.equal(s.status, 200, `stream ${i + 1} of 16`);
    }
    const over = await get('/v1/stream', auth);
    assert.equal(over.status, 503, 'the 17th stream is refused');
    assert.match(await over.text(), /too many streams/);
    assert.equal(held.length, 16);
  } finally {
    for (const a of streams) a.abort();
  }
  // The server sees those go (the next write or the peer's FIN); then the page's stream fits.
  await until(async () => {
    const a = new AbortController();
    const r = await get('/v1/stream', auth, a.signal);
    a.abort();
    return r.status === 200;
  }, WAIT, 'the aborted streams are closed by the server');
  log('control API: /dashboard without a token, /v1/stream with it (SSE, first event at once), at most 16 streams');

  // 2. the page
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    timeout: 30000 * SLOW,
    protocolTimeout: 30000 * SLOW,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
  });
  if (browser.process()) children.add(browser.process());
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  const consoleErrors = [];
  let tolerate = null; // the HTTP status whose console error the test provokes now
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    if (tolerate && text.includes(`status of ${tolerate}`)) return;
    consoleErrors.push(text);
  });
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
  await page.setViewport({ width: 1280, height: 800 });
  const metric = (name) => page.$eval(`[data-metric="${name}"]`, (e) => e.textContent.trim());
  const waitMetric = (name, value) =>
    page.waitForFunction((n, v) => document.querySelector(`[data-metric="${n}"]`).textContent.trim() === v,
      { timeout: WAIT }, name, value).catch(async (e) => {
      throw new Error(`${name} should read ${value}, reads ${await metric(name)} (${e.message})`);
    });

  tolerate = 401; // the page's first stream, before the token
  const nav = await page.goto(`${base}/dashboard`, { waitUntil: 'load', timeout: WAIT });
  assert.equal(nav.status(), 200);
  await page.waitForSelector('#auth:not([hidden])', { timeout: WAIT });
  log('the page without a token asks for it');
  await page.type('#token', TOKEN);
  await page.click('#tokenform button[type=submit]');
  await page.waitForFunction(() => document.getElementById('conn-state').textContent === 'Live', { timeout: WAIT });
  tolerate = null;
  assert.equal(await page.$eval('#auth', (e) => e.hidden), true, 'the token notice is gone');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('wsgw-control-token')), TOKEN);
  await waitMetric('connections', '0');
  await page.evaluate(() => { window.__notReloaded = true; });

  // 3. three clients
  const u1 = await client(wsPort, `/ws?token=${jwt({ group: 'a', user: 'u1' })}`);
  const u2 = await client(wsPort, `/ws?token=${jwt({ group: 'a', user: 'u2' })}`);
  const u3 = await client(wsPort, `/other?token=${jwt({ group: 'b', user: 'u3' })}`);
  let u3Closed = false;
  u3.on('close', () => { u3Closed = true; });
  await waitMetric('connections', '3');
  assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the counter changed without a reload');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#endpoints tr')].map((r) => r.textContent);
    return rows.includes('/ws2') && rows.includes('/other1');
  }, { timeout: WAIT });
  await page.waitForFunction(() => /\(this node\)3$/.test(document.querySelector('#nodes tr').textContent), { timeout: WAIT });
  log('connections 0 -> 3 without a reload; per endpoint /ws 2, /other 1; this node 3');

  const treeItem = (k, v) => `#tree li[data-key="${k}"][data-value="${v}"]`;
  await page.waitForSelector(treeItem('user', 'u3'), { timeout: WAIT });
  assert.equal(await page.$eval(treeItem('group', 'a'), (e) => e.dataset.count), '2');
  assert.equal(await page.$eval(treeItem('group', 'b'), (e) => e.dataset.count), '1');
  for (const u of ['u1', 'u2']) assert.equal(await page.$eval(treeItem('user', u), (e) => e.dataset.count), '1');
  log('the tag tree: group a 2, group b 1, users u1..u3');

  // 4. send
  const setField = async (selector, value) => {
    await page.$eval(selector, (e) => { e.value = ''; });
    await page.type(selector, value);
  };
  await setField('#send [name=selector]', '{"all":{"group":"a"}}');
  await setField('#send [name=message]', 'hello from the dashboard');
  await page.click('#send button[type=submit]');
  await page.waitForFunction(() => document.getElementById('send-result').dataset.count !== undefined, { timeout: WAIT });
  assert.equal(await page.$eval('#send-result', (e) => e.dataset.count), '2', await page.$eval('#send-result', (e) => e.textContent));
  await until(() => u1.received.length >= 1 && u2.received.length >= 1, WAIT, 'u1 and u2 get the message');
  await sleep(500 * SLOW); // room for a wrong delivery to show
  assert.deepEqual(u1.received, ['hello from the dashboard']);
  assert.deepEqual(u2.received, ['hello from the dashboard']);
  assert.deepEqual(u3.received, [], 'u3 (group b) gets nothing');

  // The same by keyboard alone: type into the selector, Tab to the message, Tab past the kind
  // (one stop for the radio group) to Send, Enter.
  await setField('#send [name=selector]', '{"all":{"group":"a"}}'); // leaves the focus there
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'send-message', 'Tab goes to the message');
  await page.$eval('#send-message', (e) => { e.value = ''; });
  await page.keyboard.type('by keyboard');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Send', 'Tab reaches Send');
  await page.keyboard.press('Enter');
  await until(() => u1.received.length >= 2 && u2.received.length >= 2, WAIT, 'u1 and u2 get the keyboard send');
  assert.equal(u1.received[1], 'by keyboard');
  assert.equal(u2.received[1], 'by keyboard');
  assert.deepEqual(u3.received, []);
  // Every control has an accessible name (a label, aria-label or text), every section a heading.
  const unnamed = await page.evaluate(() =>
    [...document.querySelectorAll('input, textarea, select, button')]
      .filter((e) => !(e.labels?.length || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby') ||
                       (e.tagName === 'BUTTON' && e.textContent.trim())))
      .map((e) => e.outerHTML.slice(0, 80)));
  assert.deepEqual(unnamed, [], 'controls without an accessible name');
  const unheaded = await page.evaluate(() =>
    [...document.querySelectorAll('section')].filter((s) => !s.querySelector('h1, h2, h3')).map((s) => s.id || s.className));
  assert.deepEqual(unheaded, [], 'sections without a heading');
  log('the send form works by keyboard alone; every control is named, every section headed');

  await setField('#send [name=selector]', '{"all":{"user":"u3"}}');
  await setField('#send [name=message]', 'AAEC/w==');
  await page.click('#send input[name=kind][value=binary]');
  await page.click('#send button[type=submit]');
  await until(() => u3.received.length >= 1, WAIT, 'u3 gets the binary message');
  assert.ok(Buffer.isBuffer(u3.received[0]), 'a binary frame');
  assert.deepEqual([...u3.received[0]], [0, 1, 2, 255]);
  assert.equal(u1.received.length, 2);
  log('send form: text to group a reached exactly u1 and u2 (answer 2), binary to u3 arrived as bytes');

  // 5. search and close
  await setField('#search [name=selector]', '');
  await page.click('#search button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#results tr[data-id]').length === 3, { timeout: WAIT });
  const rows = await page.$$eval('#results tr[data-id]', (trs) => trs.map((t) => ({ id: t.dataset.id, text: t.textContent })));
  const u3Row = rows.find((r) => r.text.includes('user=u3'));
  assert.ok(u3Row, `u3 is listed: ${JSON.stringify(rows)}`);
  assert.ok(rows.some((r) => r.text.includes('user=u1')) && rows.some((r) => r.text.includes('user=u2')));

  // the screenshot, with everything filled in: some traffic for the chart first
  const chatter = setInterval(() => { u1.send('ping'); u2.send('ping'); }, 50);
  try {
    await page.waitForFunction(() => Number(document.querySelector('[data-metric="messages_in_rate"]').textContent) >= 10,
      { timeout: WAIT });
    await sleep(3000);
  } finally {
    clearInterval(chatter);
  }
  log('messages in/s follows the clients\' traffic');
  fs.mkdirSync(path.dirname(screenshotPath), { recursive: true });
  await page.screenshot({ path: screenshotPath, fullPage: true });
  log(`screenshot: ${screenshotPath}`);

  tolerate = 400;
  await setField('#send [name=selector]', '{"bogus":{}}');
  await page.click('#send button[type=submit]');
  await page.waitForFunction(() => document.getElementById('send-result').classList.contains('error'), { timeout: WAIT });
  const shown = await page.$eval('#send-result', (e) => e.textContent);
  assert.match(shown, /bad selector/, `the server's error is shown: ${shown}`);
  tolerate = null;
  log('send form: a bad selector shows the server\'s error');

  await page.click(`#results tr[data-id="${u3Row.id}"] button`);
  await until(() => u3Closed, WAIT, 'u3\'s client sees the close');
  await waitMetric('connections', '2');
  assert.equal(u1.readyState, 1, 'u1 still open');
  assert.equal(u2.readyState, 1, 'u2 still open');
  await page.waitForFunction((id) => !document.querySelector(`#results tr[data-id="${id}"]`), { timeout: WAIT }, u3Row.id);
  log('search listed the 3 connections; Close closed u3 only; the counter reads 2');

  // 6. layout and console
  const noHorizontalScroll = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
  assert.ok(await noHorizontalScroll(), 'no horizontal scroll at 1280 px');
  await page.setViewport({ width: 390, height: 844 });
  await sleep(300);
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(widths[0] <= widths[1], `no horizontal scroll at 390 px (scrollWidth ${widths[0]} > ${widths[1]})`);
  await sleep(1200); // a stream event or two at the new width
  assert.deepEqual(consoleErrors, [], 'no console errors');
  log('no horizontal scroll at 1280 and 390 px; no console errors');

  // 7. stop with the page's stream open
  const t0 = Date.now();
  process.kill(gw.pid, 'SIGTERM');
  const exit = await Promise.race([gw.exited, sleep(5000 * SLOW).then(() => null)]);
  assert.ok(exit, `wsgwd exits within 5 s of SIGTERM with a stream open (log:\n${tail('wsgwd')})`);
  assert.equal(exit.code, 0, `wsgwd exits 0 (got ${JSON.stringify(exit)})`);
  log(`wsgwd stopped in ${Date.now() - t0} ms with the page's stream open`);
  u1.terminate();
  u2.terminate();
}

// The whole run is bounded too, within meson's 240 s, so that it fails with wsgwd's log; exiting
// stops wsgwd and the browser.
setTimeout(() => {
  log(`FAIL: not finished within 200 s\nwsgwd log:\n${tail('wsgwd')}`);
  process.exit(1);
}, 200000).unref();

main().then(
  async () => {
    if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
    log('PASS');
    process.exit(0);
  },
  async (e) => {
    log(`FAIL: ${e.stack || e}\nwsgwd log:\n${tail('wsgwd')}`);
    if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
    process.exit(1);
  },
);
