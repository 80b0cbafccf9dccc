<?php
// A tiny stand-in for wp-cli (not packaged in Debian): loads WordPress as the site localhost and
//   php wp-cli.php post TITLE CONTENT    publishes a post and uploads lcow-upload.txt; prints "ID UPLOAD_URL"
//   php wp-cli.php option NAME           prints an option
$_SERVER['HTTP_HOST'] = 'localhost';
require '/usr/share/wordpress/wp-load.php';
switch ($argv[1] ?? '') {
  case 'post':
    $id = wp_insert_post(['post_title' => $argv[2], 'post_content' => $argv[3], 'post_status' => 'publish'], true);
    if (is_wp_error($id)) { fwrite(STDERR, $id->get_error_message() . "\n"); exit(1); }
    $u = wp_upload_bits('lcow-upload.txt', null, "uploaded through 9P\n");
    if ($u['error']) { fwrite(STDERR, $u['error'] . "\n"); exit(1); }
    echo $id, ' ', $u['url'], "\n";
    break;
  case 'option':
    echo get_option($argv[2]), "\n";
    break;
  default:
    fwrite(STDERR, "usage: wp-cli.php post TITLE CONTENT | option NAME\n");
    exit(2);
}
