<?php
// Debian's wp-config.php includes /etc/wordpress/config-<HTTP_HOST>.php; php-cli scripts set HTTP_HOST.
define('DB_NAME', 'wordpress');
define('DB_USER', 'wordpress');
define('DB_PASSWORD', 'wordpress');
define('DB_HOST', 'localhost');
define('WP_CONTENT_DIR', '/data/wp-content');
define('WP_CONTENT_URL', 'http://localhost/wp-content');
define('FS_METHOD', 'direct');
define('DISABLE_WP_CRON', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
