"""``python -m sip [--json] [--expect-full]``: what the installed pjsua2 build can do (calls, opus, TLS, SRTP)."""
import sys

from sip.capabilities import main

sys.exit(main())
