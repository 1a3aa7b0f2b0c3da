// A backend that sends one command to wsgw through Redis and prints the reply (README: Commands
// over Redis and AMQP). Usage: node redis_backend.js redis://127.0.0.1:6379/0 'group=a' 'hello'
const Redis = require('ioredis');
const [url, selector, message] = process.argv.slice(2);
const redis = new Redis(url);
const id = require('node:crypto').randomUUID(), replyTo = `wsgw:replies:${id}`;
(async () => {
  await redis.xadd('wsgw:commands', '*', 'action', 'send', 'selector', selector, 'message', message,
                   'command_id', id, 'reply_to', replyTo);
  const [[, [[, fields]]]] = await redis.xread('BLOCK', 5000, 'STREAMS', replyTo, '0');
  console.log(JSON.stringify(Object.fromEntries(fields.flatMap((v, i) => (i % 2 ? [] : [[v, fields[i + 1]]])))));
  await redis.del(replyTo);
  redis.disconnect();
})();
