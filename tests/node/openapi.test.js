'use strict';
// GET /v1/openapi.json against the real answers: the document is valid OpenAPI 3.1 (checked by
// npm @seriousme/openapi-schema-validator), and every answer of a run through every operation,
// successes and errors, has a status, a content type and a body that the document describes
// (bodies checked against its schemas by ajv). Every operation the document lists must have
// been answered with a 2xx at least once, so the document cannot list what the server lacks;
// an answer the document does not list fails, so the server cannot do what it does not say.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Validator } = require('@seriousme/openapi-schema-validator');
const Ajv2020 = require('ajv/dist/2020');
const { EP, connectTagged, closeAll, control, controlUrl, uniq } = require('./lib/gw');

const T = { timeout: 30000 };

// JSON pointer of a key.
const ptr = (k) => k.replace(/~/g, '~0').replace(/\//g, '~1');

function checker(doc) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addSchema({ ...doc, $id: 'openapi' });
  const answered = new Set(); // "get /path" answered with a 2xx
  const resolve = (obj) => {
    if (!obj || !obj.$ref) return [obj, null];
    assert.match(obj.$ref, /^#\/components\/responses\//);
    const name = obj.$ref.split('/').pop();
    return [doc.components.responses[name], `#/components/responses/${ptr(name)}`];
  };
  return {
    answered,
    schema: (pointer) => ajv.getSchema(`openapi${pointer}`),
    // Checks one real answer against the document.
    check(method, path, r) {
      const what = `${method} ${path} -> ${r.status} ${r.text.slice(0, 200)}`;
      const op = doc.paths[path]?.[method.toLowerCase()];
      assert.ok(op, `the document has no ${method} ${path}`);
      const [response, refBase] = resolve(op.responses[String(r.status)]);
      assert.ok(response, `the document does not list status ${r.status} for ${what}`);
      const type = (r.headers.get('content-type') ?? '').split(';')[0].trim();
      const content = response.content ?? {};
      assert.ok(type in content, `content type ${type} of ${what} is not one of ${Object.keys(content)}`);
      const base = refBase ?? `#/paths/${ptr(path)}/${method.toLowerCase()}/responses/${r.status}`;
      const validate = ajv.getSchema(`openapi${base}/content/${ptr(type)}/schema`);
      assert.ok(validate, `no schema at ${base} for ${type}`);
      const body = type === 'application/json' ? JSON.parse(r.text) : r.text;
      assert.ok(validate(body), `${what}: ${ajv.errorsText(validate.errors)}`);
      if (r.status >= 200 && r.status < 300) answered.add(`${method.toLowerCase()} ${path}`);
    },
  };
}

test('the OpenAPI document is valid and describes every real answer', T, async () => {
  const got = await control('GET', '/v1/openapi.json');
  assert.equal(got.status, 200);
  const doc = JSON.parse(got.text);
  const result = await new Validator().validate(doc);
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 1));
  assert.equal(doc.openapi, '3.1.0');

  const c = checker(doc);
  c.check('GET', '/v1/openapi.json', got);

  const t = uniq();
  const clients = await connectTagged(EP.plain, 2, { t });
  try {
    const id = clients[0].id;
    const json = (body) => ({ body: JSON.stringify(body), contentType: 'application/json' });
    const form = (body) => ({ body, contentType: 'application/x-www-form-urlencoded' });
    const calls = [
      ['POST', '/send', `?t=${t}`, { body: 'hi' }],
      ['POST', '/send', `?t=${t}`, { body: Buffer.from([1, 2]), contentType: 'application/octet-stream' }],
      ['POST', '/send', '?a=%zz', { body: 'x' }],
      ['POST', '/send', `?t=${t}`, { body: Buffer.from([0xff]) }], // not UTF-8: 400
      ['POST', '/settags', `?t=${t}`, form('room=1')],
      ['POST', '/settags', `?t=${t}`, form('a=%zz')],
      ['GET', '/status', '', {}],
      ['GET', '/status', `?t=${t}`, { accept: 'application/json' }],
      ['GET', '/status', '?a=%zz', {}],
      ['GET', '/tree', '', {}],
      ['GET', '/tree', '', { accept: 'application/json' }],
      ['GET', '/nodes', '', {}],
      ['GET', '/nodes', '', { accept: 'application/json' }],
      ['GET', '/metrics', '', {}],
      ['GET', '/healthz', '', {}],
      ['GET', '/readyz', '', {}],
      ['POST', '/v1/send', '', json({ selector: { all: { t } }, message: 'hi' })],
      ['POST', '/v1/send', '', json({ selector: { ids: [id] }, message_base64: 'AAE=' })],
      ['POST', '/v1/send', '', json({ selector: { al: {} }, message: 'x' })],
      ['POST', '/v1/settags', '', json({ selector: { all: { t } }, tags: { room: '2', gone: '' } })],
      ['POST', '/v1/settags', '', json({ selector: {}, tags: {} })],
      ['GET', '/v1/count', `?selector=${encodeURIComponent(JSON.stringify({ all: { t }, has: ['room'] }))}`, {}],
      ['GET', '/v1/count', '?nope=1', {}],
      ['GET', '/v1/connections', `?selector=${encodeURIComponent(JSON.stringify({ all: { t } }))}&limit=1`, {}],
      ['GET', '/v1/connections', '?limit=5000', {}],
      ['POST', '/v1/close', '', json({ selector: { ids: [id] }, message: 'bye' })],
      ['POST', '/v1/close', '', json({ selector: { ids: [id] }, message: 'a', message_base64: 'YQ==' })],
      ['POST', '/close', `?t=${t}`, { body: '' }],
      ['GET', '/v1/send', '', {}], // 405
      ['DELETE', '/status', '', {}], // 405
    ];
    for (const [method, path, query, opts] of calls) {
      const r = await control(method, path + query, opts);
      c.check(method === 'DELETE' ? 'GET' : method === 'GET' && path === '/v1/send' ? 'POST' : method, path, r);
    }
    c.check('GET', '/dashboard', await control('GET', '/dashboard'));
    // The stream stays open: its head and first event, then the reader lets go. The event's data
    // must be the document's StreamSnapshot.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5000);
    try {
      const res = await fetch(controlUrl('/v1/stream'), { signal: abort.signal });
      const reader = res.body.getReader();
      let text = '';
      while (!text.includes('\n\n')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString('utf8');
      }
      abort.abort();
      c.check('GET', '/v1/stream', { status: res.status, headers: res.headers, text });
      const data = text.split('\n').find((l) => l.startsWith('data: '));
      assert.ok(data, `no data line in ${JSON.stringify(text)}`);
      const snapshot = c.schema('#/components/schemas/StreamSnapshot');
      assert.ok(snapshot(JSON.parse(data.slice(6))), `${data}: ${JSON.stringify(snapshot.errors)}`);
    } finally {
      clearTimeout(timer);
    }
    const listed = [];
    for (const [path, ops] of Object.entries(doc.paths))
      for (const m of Object.keys(ops)) if (['get', 'post'].includes(m)) listed.push(`${m} ${path}`);
    const missed = listed.filter((op) => !c.answered.has(op));
    assert.deepEqual(missed, [], 'operations of the document never answered with a 2xx');
  } finally {
    await closeAll(clients);
  }
});
