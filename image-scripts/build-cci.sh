#!/usr/bin/env bash
# The default `cci` image, run as root inside a build container started from a
# Debian or Ubuntu base (cci build pushes this script and code-user.sh next to
# it): the code user, tmux, git, build tools, Python 3, Node.js, the agents
# named in CCI_AGENTS (cci build --agent; default Claude Code) from their
# package registries, the GitHub CLI where the distribution has it, Docker
# for nested use, and shutdown/poweroff that end the session.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n==> %s\n' "$*"; }

step "certificate authorities"
# cci build adds the host's locally trusted CAs (a TLS-intercepting proxy's,
# say) to /usr/local/share/ca-certificates; trust them, npm included.
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates
update-ca-certificates
export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
mkdir -p /etc/profile.d
echo 'export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' >/etc/profile.d/cci-ca.sh

step "packages"
apt-get install -y -q --no-install-recommends \
    sudo tmux git curl wget ca-certificates gnupg jq unzip less procps iproute2 openssh-client \
    dnsutils build-essential python3 python3-pip python3-venv pipx nodejs npm \
    docker.io
apt-get install -y -q --no-install-recommends gh 2>/dev/null ||
    echo "GitHub CLI (gh) is not in this distribution's archive; skipped"

agents=${CCI_AGENTS:-claude}
for agent in $agents; do
    case $agent in
        claude)
            step "Claude Code (npm)"
            npm install -g --no-audit --no-fund @anthropic-ai/claude-code ;;
        opencode)
            step "opencode (npm)"
            npm install -g --no-audit --no-fund opencode-ai ;;
        codex)
            step "Codex CLI (npm)"
            npm install -g --no-audit --no-fund @openai/codex ;;
        aider)
            step "aider (PyPI, in its own environment)"
            PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install aider-chat ;;
        *)
            echo "unknown agent $agent" >&2
            exit 2 ;;
    esac
    command -v "$agent"
done

step "code user"
bash "$here/code-user.sh" /
usermod -aG docker code
# The agents' state folders, so that a saved state is restored into a
# folder of code's own.
install -d -o code -g code -m 0700 /home/code/.claude /home/code/.codex /home/code/.aider
install -d -o code -g code -m 0755 /home/code/.local /home/code/.local/share
install -d -o code -g code -m 0700 /home/code/.local/share/opencode

step "poweroff and shutdown end the session"
for cmd in poweroff shutdown; do
    cat >"/usr/local/bin/$cmd" <<'WRAP'
#!/bin/sh
# Ends the cci session: power the container off, also while it still boots.
[ "$(id -u)" = 0 ] || exec sudo -n "$0" "$@"
systemctl poweroff 2>/dev/null || kill -s RTMIN+4 1 2>/dev/null || kill -38 1
WRAP
    chmod 0755 "/usr/local/bin/$cmd"
done

step "clean up"
apt-get clean
rm -rf /var/lib/apt/lists/* /root/.npm /tmp/*
