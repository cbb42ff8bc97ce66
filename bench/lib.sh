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

# Process measures: resident memory, and CPU ticks (user + system) so far.
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)


# One measurement: prints "rps p50_us p90_us p99_us cpu_us_per_rq rss_kib".
# PATH_SUFFIX (default /) is the path requested.
measure_wrk() { # target_port pid conns [more wrk arguments, e.g. -H 'authorization: ...']
  local port=$1 pid=$2 c=$3 before after out
  shift 3
  wrk -t1 -c"$c" -d1s "$@" "http://127.0.0.1:$port${PATH_SUFFIX:-/}" >/dev/null 2>&1 || true
  [ "$pid" = - ] || before=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$c" -d"${DUR}s" --latency "$@" "http://127.0.0.1:$port${PATH_SUFFIX:-/}")
  [ "$pid" = - ] || after=$(cpu_ticks "$pid")
  python3 - "$out" "${before:-0}" "${after:-0}" "$TICK" "$( [ "$pid" = - ] && echo 0 || rss_kib "$pid")" <<'PY'
import re, sys
out, before, after, tick, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def us(s):
    v, unit = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
total = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
cpu = (after - before) * 1e6 / tick / total if after else 0
print(f"{rps:.0f} {us(lat['50']):.0f} {us(lat['90']):.0f} {us(lat['99']):.0f} {cpu:.1f} {rss}")
PY
}
