// The RabbitMQ Java client (Debian's librabbitmq-client-java) against actormq: publisher
// confirms, mandatory returns, the consumer cancel notification when a queue is deleted,
// and the reply codes of a few errors, as RabbitMQ 3.x gives them. Run by
// scripts/client-suites.sh (suite "java"): java JavaClientCheck.java amqp://...
// Prints "java: N passed, N failed" and exits 1 on a failure.

import com.rabbitmq.client.*;
import java.util.concurrent.*;

public class JavaClientCheck {
    static int passed = 0, failed = 0;

    static void check(String what, boolean ok) {
        if (ok) {
            passed++;
        } else {
            failed++;
            System.err.println("java: failed: " + what);
        }
    }

    /** The reply code and text of the channel or connection close an action causes. */
    static String closeOf(Connection conn, ThrowingAction action) throws Exception {
        Channel ch = conn.createChannel();
        try {
            action.run(ch);
            return "no error";
        } catch (java.io.IOException e) {
            ShutdownSignalException s = (ShutdownSignalException) e.getCause();
            Method m = s.getReason();
            if (m instanceof AMQP.Channel.Close) {
                AMQP.Channel.Close c = (AMQP.Channel.Close) m;
                return c.getReplyCode() + " " + c.getReplyText();
            }
            AMQP.Connection.Close c = (AMQP.Connection.Close) m;
            return "connection " + c.getReplyCode() + " " + c.getReplyText();
        }
    }

    interface ThrowingAction {
        void run(Channel ch) throws Exception;
    }

    public static void main(String[] args) throws Exception {
        ConnectionFactory f = new ConnectionFactory();
        f.setUri(args[0]);
        Connection conn = f.newConnection();
        check("server product", "actormq".equals(conn.getServerProperties().get("product").toString()));

        // Publisher confirms.
        Channel ch = conn.createChannel();
        String q = ch.queueDeclare("", false, true, true, null).getQueue();
        ch.confirmSelect();
        for (int i = 0; i < 100; i++) {
            ch.basicPublish("", q, null, ("m" + i).getBytes());
        }
        check("100 publishes confirmed", ch.waitForConfirms(20_000));
        check("100 messages in the queue", ch.queueDeclarePassive(q).getMessageCount() == 100);

        // Mandatory publish without a route: basic.return 312 NO_ROUTE.
        CompletableFuture<String> returned = new CompletableFuture<>();
        ch.addReturnListener(r -> returned.complete(r.getReplyCode() + " " + r.getReplyText()));
        ch.basicPublish("amq.direct", "nowhere", true, null, "lost".getBytes());
        check("mandatory return", "312 NO_ROUTE".equals(returned.get(20, TimeUnit.SECONDS)));

        // Consumer cancel notification when the queue goes.
        Channel c2 = conn.createChannel();
        String q2 = c2.queueDeclare("", false, false, true, null).getQueue();
        CompletableFuture<String> cancelled = new CompletableFuture<>();
        c2.basicConsume(q2, true, "watcher", new DefaultConsumer(c2) {
            @Override
            public void handleCancel(String tag) {
                cancelled.complete(tag);
            }
        });
        ch.queueDelete(q2);
        check("basic.cancel on queue delete", "watcher".equals(cancelled.get(20, TimeUnit.SECONDS)));

        // Errors, in RabbitMQ's codes and words.
        String e = closeOf(conn, x -> x.queueDeclarePassive("no-such-queue"));
        check("404 on a missing queue: " + e, e.equals("404 NOT_FOUND - no queue 'no-such-queue' in vhost '/'"));
        ch.queueDeclare("java-durable", true, false, false, null);
        e = closeOf(conn, x -> x.queueDeclare("java-durable", false, false, false, null));
        check("406 on an inequivalent redeclare: " + e, e.startsWith("406 PRECONDITION_FAILED - inequivalent arg 'durable'"));
        e = closeOf(conn, x -> x.exchangeDeclare("amq.mine", "direct"));
        check("403 on an amq. name: " + e, e.startsWith("403 ACCESS_REFUSED"));
        // An ack has no answer: the RPC after it meets the channel's close.
        e = closeOf(conn, x -> {
            x.basicAck(99, false);
            x.queueDeclare();
        });
        check("406 on an unknown delivery tag: " + e, e.equals("406 PRECONDITION_FAILED - unknown delivery tag 99"));
        ch.queueDelete("java-durable");

        // Basic get and ack round trip on the confirmed queue.
        GetResponse got = ch.basicGet(q, false);
        check("get", got != null && new String(got.getBody()).equals("m0"));
        ch.basicAck(got.getEnvelope().getDeliveryTag(), false);
        conn.close();
        check("clean close", !conn.isOpen());

        System.out.println("java: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
