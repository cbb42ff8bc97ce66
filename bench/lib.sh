# Shared by the bench scripts: an nginx config answering 200 "ok" on 127.0.0.1.
# write_nginx_conf DIR HTTP1_PORT [H2C_PORT] -- writes DIR/nginx.conf (logs and temp files in DIR).
write_nginx_conf() {
  local dir=$1 port=$2 h2=${3:-}
  mkdir -p "$dir/logs" "$dir/tmp"
  {
    echo "worker_processes 1;"
    echo "daemon off;"
    echo "pid $dir/nginx.pid;"
    echo "error_log $dir/logs/error.log warn;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    echo "    access_log off;"
    for t in body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $dir/tmp/$t;"; done | sed 's/body_temp_path/client_body_temp_path/'
    echo "    keepalive_requests 1000000;"
    echo "    server {"
    echo "        listen 127.0.0.1:$port backlog=4096;"
    [ -z "$h2" ] || echo "        listen 127.0.0.1:$h2 http2 backlog=4096;"
    [ -z "$h2" ] || echo "        http2_max_concurrent_streams 1000;"
    echo '        location / { default_type text/plain; return 200 "ok\n"; }'
    echo "    }"
    echo "}"
  } > "$dir/nginx.conf"
}
