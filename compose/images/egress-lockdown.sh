#!/bin/sh
# Egress lockdown for a network namespace shared by a sidecar and its agent (a compose "pod" or a Kubernetes pod).
# Only the sidecar's UID may leave the namespace or reach the resolver; every other UID (the agent's) may reach the
# sidecar's agent port on loopback and nothing else. Installed atomically with iptables-restore, IPv4 and IPv6.
#
#   egress-lockdown rules     print the iptables-restore input, IPv4 then IPv6
#   egress-lockdown install   install the rules (needs NET_ADMIN)
#   egress-lockdown verify    check the rules, prove them by connecting as each UID, write the marker
#   egress-lockdown check     compare the live rules with the marker (the healthcheck)
#
# Settings (environment): SIDECAR_UID (10001), AGENT_UID (10002, the UID the self-check connects as), the ports
# from SIDECAR_LISTEN and SIDECAR_ADMIN_LISTEN (or LOCKDOWN_AGENT_PORT, LOCKDOWN_ADMIN_PORT), LOCKDOWN_VERIFY_TARGET
# (host:port the sidecar must reach and the agent must not), LOCKDOWN_AGENT_INBOUND_TCP_PORTS (ports the agent
# serves: replies from them may leave), LOCKDOWN_MARKER (/run/agent-sidecar/lockdown-verified).
set -eu

SIDECAR_UID=${SIDECAR_UID:-10001}
AGENT_UID=${AGENT_UID:-10002}
MARKER=${LOCKDOWN_MARKER:-/run/agent-sidecar/lockdown-verified}
PROBE=${LOCKDOWN_PROBE:-/usr/local/lib/agent-sidecar/probe.ts}
VERIFY_TARGET=${LOCKDOWN_VERIFY_TARGET:-}
INBOUND_PORTS=${LOCKDOWN_AGENT_INBOUND_TCP_PORTS:-}
# Docker's embedded DNS (127.0.0.11) forwards names it does not know from inside this namespace, with a socket owned
# by root: those queries must leave. Detected from resolv.conf unless set (true/false).
DNS_FORWARDER=${LOCKDOWN_DOCKER_DNS_FORWARDER:-}
# Docker's embedded DNS server inside every user-defined network's namespaces.
DOCKER_DNS=127.0.0.11

say() { printf 'egress-lockdown: %s\n' "$*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}

# The port of HOST:PORT; nothing for unix:PATH (a socket file is out of the network's reach anyway).
port_of() {
  case "$1" in
  unix:*) ;;
  *) printf '%s' "${1##*:}" ;;
  esac
}

AGENT_PORT=${LOCKDOWN_AGENT_PORT:-$(port_of "${SIDECAR_LISTEN:-127.0.0.1:15000}")}
ADMIN_PORT=${LOCKDOWN_ADMIN_PORT:-$(port_of "${SIDECAR_ADMIN_LISTEN:-127.0.0.1:15001}")}

first_nameserver() {
  awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf 2>/dev/null || true
}

is_port() { case "$1" in '' | *[!0-9]*) return 1 ;; *) [ "$1" -ge 1 ] && [ "$1" -le 65535 ] ;; esac }
is_uid() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac }

check_settings() {
  if [ -z "$DNS_FORWARDER" ]; then
    if [ "$(first_nameserver)" = "$DOCKER_DNS" ]; then DNS_FORWARDER=true; else DNS_FORWARDER=false; fi
  fi
  case "$DNS_FORWARDER" in true | false) ;; *) die "LOCKDOWN_DOCKER_DNS_FORWARDER must be true or false" ;; esac
  is_uid "$SIDECAR_UID" || die "SIDECAR_UID must be a number"
  is_uid "$AGENT_UID" || die "AGENT_UID must be a number"
  [ "$SIDECAR_UID" != 0 ] || die "SIDECAR_UID must not be root"
  [ "$AGENT_UID" != "$SIDECAR_UID" ] || die "AGENT_UID must differ from SIDECAR_UID"
  is_port "$AGENT_PORT" || die "the agent port must be a TCP port (SIDECAR_LISTEN=${SIDECAR_LISTEN:-})"
  [ -z "$ADMIN_PORT" ] || is_port "$ADMIN_PORT" || die "bad admin port: $ADMIN_PORT"
  for p in $(printf '%s' "$INBOUND_PORTS" | tr ',' ' '); do
    is_port "$p" || die "LOCKDOWN_AGENT_INBOUND_TCP_PORTS: bad port $p"
  done
}

# Rules shared by both families: loopback replies, the sidecar, and its own connections after their sockets close.
# No rule admits a packet on connection state alone in the originating direction for UDP: a UDP entry is keyed by
# addresses and ports only, so the agent could bind the port of a DNS query the sidecar just made and ride its
# entry past no-dns-but-the-sidecar. Only replies pass on loopback, and only TCP (never a SYN) after a close.
common_rules() {
  cat <<EOF
-A OUTPUT -o lo -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -m comment --comment "replies-inside-the-pod" -j ACCEPT
-A OUTPUT -m owner --uid-owner $SIDECAR_UID -m comment --comment "the-sidecar-is-the-only-way-out" -j ACCEPT
-A OUTPUT -p tcp -m tcp ! --syn -m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL -m comment --comment "sidecar-connections-after-close" -j ACCEPT
EOF
  if [ "$DNS_FORWARDER" = true ]; then
    for proto in udp tcp; do
      echo "-A OUTPUT ! -o lo -p $proto -m $proto --dport 53 -m owner --uid-owner 0 -m comment --comment \"docker-dns-forwarder\" -j ACCEPT"
    done
  fi
  for p in $(printf '%s' "$INBOUND_PORTS" | tr ',' ' '); do
    echo "-A OUTPUT -p tcp -m tcp --sport $p -m conntrack --ctstate ESTABLISHED --ctdir REPLY -m comment --comment \"agent-serves-$p\" -j ACCEPT"
  done
}

rules_v4() {
  echo '*filter'
  echo ':INPUT ACCEPT [0:0]'
  echo ':FORWARD DROP [0:0]'
  echo ':OUTPUT DROP [0:0]'
  common_rules
  echo "-A OUTPUT -d 127.0.0.1/32 -o lo -p tcp -m tcp --dport $AGENT_PORT -m comment --comment \"agent-to-sidecar\" -j ACCEPT"
  if [ -n "$ADMIN_PORT" ]; then
    echo "-A OUTPUT -o lo -p tcp -m tcp --dport $ADMIN_PORT -m comment --comment \"admin-port-sidecar-only\" -j REJECT --reject-with tcp-reset"
  fi
  # Docker DNATs 127.0.0.11:53 to a random port before the filter table sees the packet: close the whole address.
  echo "-A OUTPUT -d $DOCKER_DNS/32 -p udp -m comment --comment \"no-dns-but-the-sidecar\" -j REJECT --reject-with icmp-port-unreachable"
  echo "-A OUTPUT -d $DOCKER_DNS/32 -p tcp -m comment --comment \"no-dns-but-the-sidecar\" -j REJECT --reject-with tcp-reset"
  echo '-A OUTPUT -p tcp -m comment --comment "deny-the-rest" -j REJECT --reject-with tcp-reset'
  echo '-A OUTPUT -m comment --comment "deny-the-rest" -j REJECT --reject-with icmp-port-unreachable'
  echo 'COMMIT'
}

rules_v6() {
  echo '*filter'
  echo ':INPUT ACCEPT [0:0]'
  echo ':FORWARD DROP [0:0]'
  echo ':OUTPUT DROP [0:0]'
  common_rules
  # Neighbour discovery carries no socket owner; the agent cannot send these types (no raw sockets, ping sockets
  # only send echo requests).
  for t in 133 135 136 143; do
    echo "-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type $t -m comment --comment \"neighbour-discovery\" -j ACCEPT"
  done
  echo '-A OUTPUT -p tcp -m comment --comment "deny-the-rest" -j REJECT --reject-with tcp-reset'
  echo '-A OUTPUT -m comment --comment "deny-the-rest" -j REJECT --reject-with icmp6-port-unreachable'
  echo 'COMMIT'
}

# The kernel may have no IPv6 at all: then there is no IPv6 path to close either.
has_ipv6() { [ -e /proc/net/if_inet6 ]; }

install_rules() {
  check_settings
  command -v iptables-restore >/dev/null || die "iptables is not installed"
  rules_v4 | iptables-restore || die "iptables-restore (IPv4) failed: does the container have NET_ADMIN?"
  if has_ipv6; then
    rules_v6 | ip6tables-restore || die "ip6tables-restore (IPv6) failed"
  else
    say "the kernel has no IPv6: no IPv6 rules needed"
  fi
  say "installed: only UID $SIDECAR_UID leaves; others reach 127.0.0.1:$AGENT_PORT only"
}

# Every expected rule is present (iptables -C), the policy is DROP, and there is no rule we did not write.
check_family() {
  family=$1
  shift
  expected=$("$@" | grep -c '^-A OUTPUT' || true)
  live=$($family -S OUTPUT) || die "$family -S failed"
  printf '%s\n' "$live" | grep -qx -- '-P OUTPUT DROP' || die "$family: the OUTPUT policy is not DROP"
  count=$(printf '%s\n' "$live" | grep -c '^-A OUTPUT' || true)
  [ "$count" = "$expected" ] || die "$family: $count OUTPUT rules live, $expected expected"
  "$@" | grep '^-A OUTPUT' | sed 's/^-A /-C /' | while IFS= read -r rule; do
    eval "$family $rule" || die "$family: missing rule: $rule"
  done
}

check_rules() {
  check_settings
  check_family iptables rules_v4
  if has_ipv6; then check_family ip6tables rules_v6; fi
}

digest() {
  { iptables -S; if has_ipv6; then ip6tables -S; fi; } | sha256sum | cut -d' ' -f1
}

as_uid() {
  uid=$1
  shift
  setpriv --reuid "$uid" --regid "$uid" --clear-groups --inh-caps=-all -- node "$PROBE" "$@"
}

# Starts a listener as the sidecar UID in the background and waits until it accepts; $listener is its PID.
listen_as_sidecar() {
  ready="$(dirname "$MARKER")/.listener-ready"
  rm -f "$ready"
  setpriv --reuid "$SIDECAR_UID" --regid "$SIDECAR_UID" --clear-groups --inh-caps=-all -- \
    node "$PROBE" listen "$1" "$2" 30 >"$ready" 2>&1 &
  listener=$!
  tries=0
  until grep -q '"check":"listen"' "$ready" 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || die "the self-check listener did not start on $1 $2: $(cat "$ready" 2>/dev/null)"
    sleep 0.1
  done
  rm -f "$ready"
}

# Root here has no CAP_KILL: the sidecar UID signals its own process (the shell's builtin kill; there is no kill binary).
stop_listener() {
  setpriv --reuid "$SIDECAR_UID" --regid "$SIDECAR_UID" --clear-groups --inh-caps=-all -- sh -c "kill $listener" || true
  wait "$listener" 2>/dev/null || true
}

# Runs checks for one UID in one probe process. Each check line: "reached|what|probe command" or "blocked|...".
# Prints the probe's answers (one JSON line per check) on stdout.
run_checks() {
  uid=$1 checks=$2
  answers=$(printf '%s\n' "$checks" | cut -d'|' -f3 | as_uid "$uid" batch 2>&1) || true
  i=0
  while IFS='|' read -r want what _; do
    [ -n "$want" ] || continue
    i=$((i + 1))
    answer=$(printf '%s\n' "$answers" | sed -n "${i}p")
    case $answer in '{"ok":true'*) got=reached ;; *) got=blocked ;; esac
    [ "$got" = "$want" ] || die "$what: expected $want as UID $uid, got: $answer"
    say "ok: $what ($want as UID $uid)"
  done <<CHECKS
$checks
CHECKS
  printf '%s\n' "$answers"
}

# Proves the rules by behaviour: the same destinations, reached by the sidecar's UID and refused to the agent's.
verify_behaviour() {
  command -v setpriv >/dev/null || die "setpriv (util-linux) is needed for the self-check"
  [ -r "$PROBE" ] || die "the probe $PROBE is missing"
  ns=$(first_nameserver)
  host='' port='' addr=''
  if [ -n "$VERIFY_TARGET" ]; then
    host=${VERIFY_TARGET%:*}
    port=${VERIFY_TARGET##*:}
    is_port "$port" || die "LOCKDOWN_VERIFY_TARGET must be host:port"
  fi

  listen_as_sidecar 127.0.0.1 "$AGENT_PORT${ADMIN_PORT:+,$ADMIN_PORT}"
  sidecar_checks=${ADMIN_PORT:+"reached|loopback to the admin port|tcp 127.0.0.1 $ADMIN_PORT"}
  [ -z "$ns" ] || sidecar_checks="$sidecar_checks
reached|DNS over TCP to $ns|tcp $ns 53"
  [ -z "$host" ] || sidecar_checks="$sidecar_checks
reached|TCP to $host|tcp $host $port
reached|name lookup of $host|dns $host"
  answers=$(run_checks "$SIDECAR_UID" "$sidecar_checks")
  if [ -n "$host" ]; then
    addr=$(printf '%s\n' "$answers" | sed -n 's/.*"check":"dns".*"addresses":\["\([^"]*\)".*/\1/p' | head -n1)
    [ -n "$addr" ] || die "the sidecar cannot resolve $host"
  fi

  agent_checks="reached|loopback to the agent port|tcp 127.0.0.1 $AGENT_PORT"
  [ -z "$ADMIN_PORT" ] || agent_checks="$agent_checks
blocked|loopback to the admin port|tcp 127.0.0.1 $ADMIN_PORT"
  [ -z "$ns" ] || agent_checks="$agent_checks
blocked|DNS over UDP to $ns|dns lockdown-check.invalid $ns
blocked|DNS over TCP to $ns|tcp $ns 53"
  if [ -n "$host" ]; then
    case $host in *[!0-9.]*) agent_checks="$agent_checks
blocked|name lookup of $host|dns $host" ;;
    esac
    agent_checks="$agent_checks
blocked|TCP to $host ($addr:$port)|tcp $addr $port
blocked|UDP to $host ($addr:$port)|udp $addr $port"
  fi
  run_checks "$AGENT_UID" "$agent_checks" >/dev/null
  stop_listener

  if has_ipv6 && grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6; then
    listen_as_sidecar ::1 "$AGENT_PORT"
    run_checks "$SIDECAR_UID" "reached|IPv6 loopback|tcp ::1 $AGENT_PORT" >/dev/null
    run_checks "$AGENT_UID" "blocked|IPv6 loopback|tcp ::1 $AGENT_PORT" >/dev/null
    stop_listener
  fi
}

write_marker() {
  dir=$(dirname "$MARKER")
  [ -d "$dir" ] && [ -w "$dir" ] || die "cannot write the marker in $dir (mount a tmpfs there)"
  tmp="$MARKER.tmp"
  {
    echo "digest $(digest)"
    echo "sidecar_uid $SIDECAR_UID"
    echo "agent_port $AGENT_PORT"
    echo "admin_port ${ADMIN_PORT:-none}"
    echo "verified_at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$tmp"
  chmod 0444 "$tmp"
  mv -f "$tmp" "$MARKER"
}

verify() {
  check_rules
  say "rules in place"
  verify_behaviour
  write_marker
  say "verified; marker $MARKER"
}

check_marker() {
  [ -s "$MARKER" ] || die "no marker at $MARKER: the lockdown was never verified"
  want=$(sed -n 's/^digest //p' "$MARKER")
  [ "$(digest)" = "$want" ] || die "the rules changed since they were verified"
}

case "${1:-}" in
rules)
  check_settings
  rules_v4
  rules_v6
  ;;
install) install_rules ;;
verify) verify ;;
check) check_marker ;;
*)
  echo "usage: egress-lockdown rules|install|verify|check" >&2
  exit 2
  ;;
esac
