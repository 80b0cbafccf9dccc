// Shell scripts that start and stop the applications of the app suites inside their containers, shared by the
// suites (test/e2e-apps) and the rootfs cache bench (test/bench/rootfs-cache.ts) so both measure the same thing.

/** WordPress's MariaDB socket (the datadir is /data/mysql, on the bind mount). */
export const WP_SOCK = '/run/mysqld/mysqld.sock';

/** WordPress: the datadir and wp-content on the share, then `mariadb-install-db` there. */
export const WP_INIT =
  // wp-content on the share, as in the usual WordPress deployments; the themes and plugins Debian ships are
  // linked in (WordPress renders an empty page without a theme).
  'mkdir -p /data/mysql /data/wp-content/uploads && chown mysql:mysql /data/mysql && ' +
  'ln -s /usr/share/wordpress/wp-content/themes /data/wp-content/themes && ' +
  'ln -s /usr/share/wordpress/wp-content/plugins /data/wp-content/plugins && ' +
  'chown -R www-data:www-data /data/wp-content && ' +
  'mariadb-install-db --user=mysql --datadir=/data/mysql --skip-test-db >/dev/null';

/** WordPress: MariaDB, then Apache, until a PHP page answers. */
export const WP_START =
  `mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld && ` +
  `setsid mariadbd --user=mysql --datadir=/data/mysql --socket=${WP_SOCK} --skip-networking ` +
  `--innodb-use-native-aio=0 --log-error=/data/mysql/error.log </dev/null >/dev/null 2>&1 & ` +
  `for i in $(seq 600); do mariadb-admin --socket=${WP_SOCK} ping >/dev/null 2>&1 && break; sleep 0.5; done && ` +
  `mkdir -p /run/lock && apache2ctl start && for i in $(seq 300); do curl -fs -o /dev/null http://localhost/wp-includes/version.php && exit 0; sleep 0.5; done; exit 1`;

export const WP_STOP =
  `apache2ctl stop; while [ -e /run/apache2/apache2.pid ]; do sleep 0.2; done; ` +
  `mariadb-admin --socket=${WP_SOCK} shutdown && while [ -e /data/mysql/*.pid ]; do sleep 0.2; done`;

/** WordPress: the database and user the web installer needs. */
export const WP_DATABASE =
  `mariadb --socket=${WP_SOCK} -e "create database wordpress; create user wordpress@localhost identified by 'wordpress'; ` +
  `grant all on wordpress.* to wordpress@localhost"`;

/** WordPress: the web installer's second step through curl; prints the HTTP status. */
export const WP_WEB_INSTALL =
  `curl -s -o /dev/null -w '%{http_code}' --data-urlencode weblog_title=LCOW --data-urlencode user_name=admin ` +
  `--data-urlencode admin_password=lcow-Pass-1234 --data-urlencode admin_password2=lcow-Pass-1234 ` +
  `--data-urlencode pw_weak=1 --data-urlencode admin_email=admin@example.com --data-urlencode blog_public=0 ` +
  `'http://localhost/wp-admin/install.php?step=2'`;

const RABBITMQ_ENV =
  'export RABBITMQ_MNESIA_BASE=/data/rabbitmq/mnesia RABBITMQ_LOG_BASE=/data/rabbitmq/log ' +
  'RABBITMQ_NODENAME=rabbit@localhost HOME=/var/lib/rabbitmq';
const RABBITMQ_PID = '/data/rabbitmq/mnesia/rabbit@localhost.pid';

/**
 * RabbitMQ: the broker started detached as the rabbitmq user, its Mnesia and message store on the share; ready
 * once it printed "Starting broker... completed". Readiness and stop are read from files and signals, not with
 * rabbitmqctl: every rabbitmqctl call boots another Erlang VM (tens of seconds under TCG).
 */
export const RABBITMQ_START = (waitSeconds: number): string =>
  `${RABBITMQ_ENV}; mkdir -p /data/rabbitmq && chown rabbitmq:rabbitmq /data/rabbitmq && : > /data/rabbitmq/stdout.log && ` +
  `(setsid runuser -u rabbitmq -- /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null >>/data/rabbitmq/stdout.log 2>&1 &) && ` +
  `for i in $(seq ${waitSeconds}); do grep -q 'completed with' /data/rabbitmq/stdout.log && exit 0; sleep 1; done; ` +
  `cat /data/rabbitmq/stdout.log; exit 1`;

/** SIGTERM is RabbitMQ's clean shutdown (the message store is closed and synced); waits for the VM to exit. */
export const RABBITMQ_STOP = `pid=$(cat ${RABBITMQ_PID}) && kill -TERM $pid && while kill -0 $pid 2>/dev/null; do sleep 0.5; done`;
