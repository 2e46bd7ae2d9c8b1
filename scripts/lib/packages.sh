# Sourced by scripts/test and the bench/ scripts: make sure Debian packages are installed.
#
#   ensure_packages PKG...
#
# Does nothing when every package is installed. Otherwise, as root on a Debian machine, runs
# `apt-get update` and `apt-get install` for the missing ones (Postfix pre-answered with "No
# configuration", so installing it never sets up a system mail server); as anyone else, prints
# the exact command to run and exits 1. The tests fail loudly when a tool is missing rather than
# skipping (a skipped interop test proves nothing), so this is where the newcomer learns what
# to install.

missing_packages() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || printf '%s\n' "$pkg"
    done
}

ensure_packages() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        echo "note: not a Debian machine; the tests need these (or your system's equivalents): $*" >&2
        return 0
    fi
    local missing
    missing=$(missing_packages "$@" | tr '\n' ' ')
    missing=${missing% }
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "These Debian packages are needed and missing: $missing" >&2
        echo "Install them, then run this command again:" >&2
        case " $missing " in
            *" postfix "*) echo "  echo 'postfix postfix/main_mailer_type select No configuration' | sudo debconf-set-selections" >&2 ;;
        esac
        echo "  sudo apt-get install -y --no-install-recommends $missing" >&2
        exit 1
    fi
    echo "== installing: $missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    case " $missing " in
        *" postfix "*) echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections ;;
    esac
    apt-get update
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y --no-install-recommends $missing
}
