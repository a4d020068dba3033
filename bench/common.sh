# bench/common.sh: helpers the benchmark scripts source (bash).
#
#   wait_quiet      wait (up to QUIET_WAIT s, default 1800) until the 1-minute load average is
#                   below QUIET_LOAD (default 1.5), then print the load average
#   cpu_s PID       CPU seconds (user+system) the process has used so far
#   cpu_ticks       the machine's busy, idle and steal ticks so far ("cpu" line of /proc/stat;
#                   steal: time the hypervisor gave this VM's cores to someone else)
#   machine_share T0 T1   "busy:B%,idle:I%,steal:S%" between two cpu_ticks readings. busy and
#                   idle are sampled at timer ticks: loads woken by ms timers (linger.ms, rate
#                   loops) can be under-counted 2x (seen: broker+service+redis cpu_s summed to
#                   2x "busy"); cpu_s is exact
QUIET_LOAD=${QUIET_LOAD:-1.5}
QUIET_WAIT=${QUIET_WAIT:-1800}

load1() { cut -d' ' -f1 /proc/loadavg; }

wait_quiet() { # the benchmark's own stack idles first; other users' jobs are waited out
    local t
    for ((t = 0; t < QUIET_WAIT; t += 10)); do
        awk -v l="$(load1)" -v q="$QUIET_LOAD" 'BEGIN { exit !(l < q) }' && break
        ((t % 60 == 0)) && echo "== waiting for a quiet machine (load $(load1))" >&2
        sleep 10
    done
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }

cpu_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8, $5 + $6, $9}' /proc/stat; }

machine_share() {
    echo "$1 $2" | awk '{b = $4 - $1; i = $5 - $2; s = $6 - $3; t = b + i + s
        printf "busy:%.0f%%,idle:%.0f%%,steal:%.0f%%", 100 * b / t, 100 * i / t, 100 * s / t}'
}
