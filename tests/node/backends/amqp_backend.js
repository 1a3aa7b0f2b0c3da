// A backend that sends one command to wsgw through AMQP and prints the reply (README: Commands
// over Redis and AMQP). Usage: node amqp_backend.js amqp://guest:guest@127.0.0.1:5672/ 'group=a' 'hello'
const amqp = require('amqplib');
const [url, selector, message] = process.argv.slice(2);
(async () => {
  const conn = await amqp.connect(url), ch = await conn.createChannel(), id = require('node:crypto').randomUUID();
  let answer; const reply = new Promise((resolve) => (answer = resolve));
  await ch.consume('amq.rabbitmq.reply-to', answer, { noAck: true }); // RabbitMQ's direct reply-to
  ch.sendToQueue('wsgw.commands', Buffer.from(JSON.stringify({ action: 'send', selector, message, command_id: id })),
                 { persistent: true, replyTo: 'amq.rabbitmq.reply-to', correlationId: id });
  console.log((await reply).content.toString());
  await conn.close();
})();
