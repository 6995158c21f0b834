/* Puente's jitter-buffer policy, settable from Python: pjsua2 wraps MediaConfig.jbDiscardAlgo as an
 * opaque enum pointer that Python cannot assign.
 *
 * pjsua's default, PJMEDIA_JB_DISCARD_PROGRESSIVE, drops 20 ms frames of the caller's audio whenever
 * the buffer looks longer than the measured jitter needs: after a burst of packets (a sender or a host
 * catching up under load) words lose pieces that Whisper then has to guess. Puente listens to callers
 * rather than holding a duplex conversation with them, so it keeps every frame (DISCARD_NONE: a frame
 * is dropped only when the buffer is full, at MediaConfig.jbMax, 500 ms by default).
 */
#ifndef PUENTE_JITTER_HPP
#define PUENTE_JITTER_HPP

#include <pjsua2.hpp>

namespace puente {

/* Jitter buffers of calls set up after libInit(cfg) never drop a frame unless full. */
inline void keepEveryFrame(pj::MediaConfig &cfg)
{
    cfg.jbDiscardAlgo = PJMEDIA_JB_DISCARD_NONE;
}

}  // namespace puente

#endif
