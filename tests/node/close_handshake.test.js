'use strict';
// The closing handshake that wsgwd starts (/close, and the same path for idle, slow-consumer and
// shutdown closes), seen from a raw TCP client so that every byte and the moment of the FIN are
// visible. RFC 6455 7.1.1: after sending its Close frame the server waits for the client's
// before it closes the TCP connection. A server that closes at once makes the kernel answer any
// data the client sent meanwhile (it had not read the Close yet) with a reset, and a reset can
// take the unread Close frame and the /close body with it: the churn test saw `ws` clients that
// were sending during a /close report 1006 instead of 1000 "Closed by server".

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { EP, count, statusJson, until, within, sleep } = require('./lib/gw');

const WS_PORT = Number(process.env.WSGW_WS_PORT);

// A WebSocket client on a bare socket: it reads the server's frames (unmasked, short) and writes
// masked ones.
class RawClient {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.frames = []; // { opcode, payload, at (ms) }
    this.waiters = [];
    this.endedAt = null; // the server's FIN
    this.error = null; // e.g. ECONNRESET
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
    });
    socket.on('end', () => {
      this.endedAt = Date.now();
      this.wake();
    });
    socket.on('error', (e) => {
      this.error = e.code || e.message;
      this.wake();
    });
    socket.on('close', () => this.wake());
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  parse() {
    while (this.buf.length >= 2) {
      const len = this.buf[1] & 0x7f;
      assert.ok(len < 126 && !(this.buf[1] & 0x80), 'short unmasked frames only in this test');
      if (this.buf.length < 2 + len) return;
      this.frames.push({ opcode: this.buf[0] & 0x0f, payload: this.buf.subarray(2, 2 + len), at: Date.now() });
      this.buf = this.buf.subarray(2 + len);
    }
    this.wake();
  }

  async frame(n, ms = 5000) {
    await within(ms, (async () => {
      while (this.frames.length <= n && !this.endedAt && !this.error) await new Promise((r) => this.waiters.push(r));
    })(), `frame #${n} from wsgwd`);
    assert.ok(this.frames.length > n, `wsgwd ended the connection before frame #${n} (error ${this.error})`);
    return this.frames[n];
  }

  async ended(ms) {
    await within(ms, (async () => {
      while (!this.endedAt && !this.error && !this.socket.destroyed) await new Promise((r) => this.waiters.push(r));
    })(), 'the end of the TCP connection');
  }

  send(opcode, payload) {
    const mask = Buffer.from([0x11, 0x22, 0x33, 0x44]);
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
    this.socket.write(Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]));
  }
}

// Connects and completes the upgrade on `path`; resolves with the client and its connection id.
async function rawConnect(path) {
  const socket = net.connect(WS_PORT, '127.0.0.1');
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let head = Buffer.alloc(0);
  const headDone = new Promise((resolve, reject) => {
    const onData = (d) => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      socket.pause();
      const rest = head.subarray(end + 4);
      resolve({ status: head.subarray(0, head.indexOf('\r\n')).toString(), rest });
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
  socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  const { status, rest } = await within(5000, headDone, `upgrade on ${path}`);
  assert.match(status, /^HTTP\/1\.1 101 /);
  const client = new RawClient(socket);
  if (rest.length) socket.emit('data', rest);
  socket.resume();
  const addr = `127.0.0.1:${socket.localPort}`;
  const id = await until(async () => (await statusJson()).connections.find((c) => c.remote_addr === addr)?.id, 5000,
    `${addr} in /status`);
  return { client, id };
}

test('after a /close, wsgwd waits for the client\'s close frame before it closes the TCP connection', { timeout: 20000 }, async () => {
  const { client, id } = await rawConnect(EP.plain);
  try {
    assert.equal(await count('close', `id=${id}`, 'bye'), 1);
    const body = await client.frame(0);
    assert.deepEqual({ opcode: body.opcode, text: body.payload.toString() }, { opcode: 1, text: 'bye' });
    const close = await client.frame(1);
    assert.equal(close.opcode, 8);
    assert.equal(close.payload.readUInt16BE(0), 1000);
    assert.equal(close.payload.subarray(2).toString(), 'Closed by server');

    // The client has not answered yet: the connection must stay up (lws gives a silent client 5 s).
    await sleep(500);
    assert.equal(client.endedAt, null,
      `wsgwd closed the TCP connection ${client.endedAt - close.at} ms after its close frame, ` +
        'without waiting for the client\'s');

    // A client that had not read the close yet may still send: no reset for that.
    client.send(1, Buffer.from('late'));
    await sleep(200);
    assert.equal(client.error, null, 'a data frame sent during the closing handshake got the connection reset');

    // The client's close frame ends it: wsgwd closes the TCP connection, cleanly.
    client.send(8, Buffer.from([0x03, 0xe8]));
    await client.ended(3000);
    assert.equal(client.error, null, 'the TCP connection was reset instead of closed');
    assert.equal(client.frames.length, 2, 'nothing after the close frame');
  } finally {
    client.socket.destroy();
  }
});
