# Puente's pjsua2 build: every source pin, configure flag and config_site.h value, each with why.
# Sourced by scripts/pjsua2/build.sh. Changing anything in scripts/pjsua2/ changes the cache key, so
# the next setup rebuilds the wheel (about 2.5 minutes on 2 cores) instead of reusing a stale one.

# --- Source ------------------------------------------------------------------------------------
# pjproject 2.15.1: the release the PyPI wheel `pjsua2-python` 2.15.1 was built from, so the Python
# API (pjsua2 with AudioMediaPort) is the one sip/ is written against.
PJPROJECT_VERSION=2.15.1
PJPROJECT_TOPDIR=pjproject-$PJPROJECT_VERSION   # the folder the tarball unpacks to
# Tarballs accepted, by sha256. A tarball of a different sha256 is refused (or pin yours with
# PJPROJECT_SHA256=<its sha256>, see build.sh). Only the vendored one is pinned:
#   380bb718…: `git archive` of tag 2.15.1 (commit 7de6e686fee1642f5443a3f39f0e5ad5e478a117),
#              ../shared/vendor/pjproject-2.15.1.tar.gz (see that folder's README.md).
# The official download (https://github.com/pjsip/pjproject/archive/refs/tags/2.15.1.tar.gz) is a
# different file whose sha256 could not be verified where this was written (no internet), so it is
# neither pinned nor downloaded: fetch it yourself, check it, and pass PJPROJECT_SOURCE + PJPROJECT_SHA256.
PJPROJECT_SHA256S=(380bb718c991a662a15288210d580861ab4ce25222f50043313159ad3f267b8e)
PJPROJECT_VENDORED=../shared/vendor/pjproject-$PJPROJECT_VERSION.tar.gz   # relative to the repo root

# --- configure -----------------------------------------------------------------------------------
CONFIGURE_FLAGS=(
  --enable-epoll        # epoll ioqueue: select() is capped by FD_SETSIZE (1024) and scans every handle
                        # on each poll; epoll only returns the ready ones, which is what 2 RTP/RTCP
                        # sockets per call x hundreds of calls needs
  --disable-video       # audio-only gateway: no video codecs, devices or capture threads
  --disable-sound       # a server has no sound card: pjsua runs on the null device (setNullDev), whose
                        # clock drives the conference bridge
  --enable-shared=no    # static pjproject libraries linked whole into _pjsua2.so: the wheel needs no
                        # libpj*.so at run time (hence -fPIC below)
  --disable-upnp        # no UPnP port mapping on a server; and the wheel must not pick up libupnp just
                        # because the build machine happens to have it
)
# opus and OpenSSL are not named with --with-opus/--with-ssl: those flags only add a non-system
# prefix (a bare --with-opus adds "-Iyes/include"), and configure finds Debian's libopus-dev and
# libssl-dev (OpenSSL 3) in /usr by itself. build.sh fails if either was not found, rather than
# building a wheel without opus or TLS. SRTP is pjproject's bundled libsrtp (the default).

# -O2: optimised (setting CFLAGS replaces autoconf's default "-g -O2"). -fPIC: the static libraries
# are linked into a shared Python extension. -g0: no debug info; it also comes after Python's own
# "-g" when the SWIG wrapper (one large generated C++ file) is compiled, which makes that step
# faster and the extension smaller (it is stripped anyway).
PJ_CFLAGS="-O2 -fPIC -g0"
# Jobs for make; PJSUA2_MAKE_JOBS overrides it without changing the cache key, since it does not
# change the wheel. The SWIG wrapper is one file and compiles on one core whatever this is.
MAKE_JOBS=${PJSUA2_MAKE_JOBS:-2}

# --- pjlib/include/pj/config_site.h ----------------------------------------------------------------
# Sized for PJSUA_MAX_CALLS calls held at once in one process. pjproject's defaults are for a phone.
CONFIG_SITE_H=$(cat <<'EOF'
/* Puente's pjproject config (generated from scripts/pjsua2/config.sh; the reasons are there). */

/* Calls per process (default 4 in the PyPI wheel): the capacity benchmark ramps to 300 calls held
 * at once, so the cap must sit above the knee it measures, not be the knee. pjsua keeps a static
 * array of this many call slots (about 22 KB each: 11 MB of bss for 512, measured), and silently
 * lowers a larger maxCalls to it. */
#define PJSUA_MAX_CALLS                 512

/* Conference bridge slots (default 254): each call holds its stream port, the gateway's
 * FrameTap (sip/media.py AudioTaps) and a prompt player, and sip/runtime keeps an ended call's tap
 * and player 2 s longer (RETIRE_AFTER_S); 4 per call covers that churn. Unused slots cost a pointer. */
#define PJSUA_MAX_CONF_PORTS            (4 * PJSUA_MAX_CALLS)

/* File players and recorders (default 32 each): one prompt player per call plus the one being
 * retired; a recorder per call if calls are recorded. Static arrays of small structs. */
#define PJSUA_MAX_PLAYERS               (2 * PJSUA_MAX_CALLS)
#define PJSUA_MAX_RECORDERS             PJSUA_MAX_CALLS

/* Handles per ioqueue (default 64). The media ioqueue holds 2 sockets per call (RTP + RTCP), opened
 * before onIncomingCall even for calls we reject, and a closed socket stays registered for 500 ms
 * (PJ_IOQUEUE_KEY_FREE_DELAY); running out is an assertion that aborts the process. The SIP ioqueue
 * is sized the same (PJSIP_MAX_TRANSPORTS defaults to this) and holds one handle per TCP/TLS
 * connection. 4096 = 4 x (2 per call) x 512 calls of headroom for floods and churn; keys are
 * preallocated (a few hundred bytes each). The process's open-file limit must allow it too. */
#define PJ_IOQUEUE_MAX_HANDLES          4096

/* Transaction and dialog hash tables (defaults 1023 and 511; sizes must be 2^n-1). Not hard caps,
 * but chains grow past them: every call has INVITE, BYE and often re-INVITE/INFO/REFER
 * transactions, and over UDP completed ones linger 32 s (timers D/J). */
#define PJSIP_MAX_TSX_COUNT             (16 * 1024 - 1)
#define PJSIP_MAX_DIALOG_COUNT          (4 * 1024 - 1)

/* SIP/TCP listen backlog (default 5): callers connecting at the same moment (a trunk reconnecting
 * many TCP legs, a load test) must not have their SYNs dropped. TLS already uses PJ_SOMAXCONN. */
#define PJSIP_TCP_TRANSPORT_BACKLOG     128

/* L16 at 16 kHz mono (default: 44.1 kHz only): lossless PCM at the bridge's own rate, so a test
 * can check that a call's audio arrives bit for bit while a hundred other calls are up
 * (tests/test_sip_load.py). Never negotiated unless listed in sip.codecs: sip/codecs.py disables
 * every codec not listed. */
#define PJMEDIA_CODEC_L16_HAS_16KHZ_MONO 1
EOF
)
