#!/usr/bin/python3
"""AMQP client for the RabbitMQ test (pika, Debian's python3-pika).

  amqp-client publish QUEUE N      durable queue, N persistent messages "msg-1".."msg-N", publisher confirms
  amqp-client publish-acks QUEUE   publishes msg-1, msg-2... forever; prints "ack N" once the broker confirmed
                                   message N (persisted: a durable queue confirms after the message is on disk)
  amqp-client drain QUEUE          consumes everything in QUEUE, acks it, prints one body per line, then "end"
  amqp-client count QUEUE          prints the number of ready messages (passive declare)
"""
import sys

import pika

queue = sys.argv[2]
conn = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", heartbeat=0,
                                                         blocked_connection_timeout=300))
ch = conn.channel()
mode = sys.argv[1]
if mode == "count":
    print(ch.queue_declare(queue=queue, durable=True, passive=True).method.message_count)
elif mode in ("publish", "publish-acks"):
    ch.queue_declare(queue=queue, durable=True)
    ch.confirm_delivery()  # basic_publish now returns only after the broker's confirm (raises if nacked)
    # delivery_mode 2: persistent (AMQP 0-9-1); bookworm's pika (1.2) has no pika.DeliveryMode enum yet.
    props = pika.BasicProperties(delivery_mode=2)
    n = int(sys.argv[3]) if mode == "publish" else None
    i = 0
    while n is None or i < n:
        i += 1
        ch.basic_publish(exchange="", routing_key=queue, body=f"msg-{i}".encode(), properties=props,
                         mandatory=True)
        if n is None:
            print(f"ack {i}", flush=True)
    print(f"published {i}", flush=True)
elif mode == "drain":
    ch.queue_declare(queue=queue, durable=True)
    while True:
        method, _props, body = ch.basic_get(queue=queue, auto_ack=False)
        if method is None:
            break
        print(body.decode())
        ch.basic_ack(method.delivery_tag)
    print("end")
else:
    sys.exit(f"unknown mode {mode}")
conn.close()
