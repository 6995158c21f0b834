"""One call: the ``CallSession`` state machine and what it uses.

    session.py   the state machine (states, transitions, what each event does)
    routing.py   the routing policy: from the call reason to a decision
    speech.py    the speech pipeline: transcribe, classify, recognise yes/no (shared models, worker pool)
    recorder.py  writes the call's facts; keeps the call going when the store fails
    context.py   the handoff context and the X-Puente SIP headers that carry it
    numbers.py   the caller's number, from SIP identity headers to E.164
    prompts.py   the recorded prompts (``prompts/<lang>/<prompt>.wav``)
"""
