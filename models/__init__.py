"""Speech on the premises: voice activity, endpointing and Whisper transcription.

Knows nothing of SIP or intents. ``models.audio`` is the one tiny module that
``sip/`` may import too (the shared audio-frame type).
"""
