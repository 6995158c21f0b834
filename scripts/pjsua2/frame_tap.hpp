/* Puente's FrameTap: a conference-bridge port that keeps the audio it receives in a ring buffer
 * for a reader to collect in batches.
 *
 * pjsua2's AudioMediaPort calls back into Python (a SWIG director) for every 20 ms frame, on the
 * bridge's one clock thread: at a hundred calls that is 5,000 GIL round trips a second on the
 * thread that times every call's audio, and the clock falls behind. A FrameTap never runs Python:
 * the clock thread copies the frame under a mutex and returns; the reader (Puente's SIP thread)
 * drains every tap about once a frame time and hands whole frames on from there.
 *
 * Compiled into the pjsua2 module by scripts/pjsua2/build.sh (puente.i wraps it). Ours, not
 * pjproject's: it uses only pjsua2's public AudioMedia API and pjmedia's port interface.
 */
#ifndef PUENTE_FRAME_TAP_HPP
#define PUENTE_FRAME_TAP_HPP

#include <pjsua2.hpp>
#include <pjsua-lib/pjsua.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace puente {

/* What the clock thread and the reader share. The port owns it, not the FrameTap: pjsua removes
 * a port from the bridge asynchronously, so the clock thread may still put a frame after the
 * FrameTap is gone; the buffer is freed with the port (on_destroy). */
struct TapBuffer {
    std::mutex lock;
    std::vector<char> ring;          /* capacity whole frames */
    unsigned frame_bytes = 0;
    unsigned capacity = 0;
    unsigned long long written = 0;  /* frames put since creation */
    unsigned long long read = 0;     /* stream position of the next frame to read */
    unsigned long long dropped = 0;  /* frames overwritten before they were read */
    pj_pool_t *pool = nullptr;
};

class FrameTap : public pj::AudioMedia {
public:
    FrameTap() {}

    /* Leaves the bridge; the buffer goes when the bridge lets go of the port. */
    virtual ~FrameTap()
    {
        try {
            unregisterMediaPort();
        } catch (pj::Error &) {
            /* not registered (createTap failed): nothing to leave */
        }
        if (port_)
            pjmedia_port_destroy(port_);
    }

    /* Create the port and add it to the bridge: mono 16-bit PCM at clock_rate, frame_ms per
     * frame, holding up to capacity_frames unread frames (then the oldest are dropped). */
    void createTap(const std::string &name, unsigned clock_rate, unsigned frame_ms,
                   unsigned capacity_frames) PJSUA2_THROW(pj::Error)
    {
        if (port_)
            fail(PJ_EEXISTS, "FrameTap already created");
        if (clock_rate == 0 || frame_ms == 0 || capacity_frames == 0)
            fail(PJ_EINVAL, "clock_rate, frame_ms and capacity_frames must be positive");
        pj_pool_t *pool = pjsua_pool_create("tap%p", 512, 512);
        if (!pool)
            fail(PJ_ENOMEM, "no pool for the FrameTap");
        TapBuffer *buffer = new TapBuffer();
        buffer->pool = pool;
        buffer->frame_bytes = clock_rate * frame_ms / 1000 * 2;
        buffer->capacity = capacity_frames;
        buffer->ring.resize((size_t)buffer->frame_bytes * capacity_frames);

        pjmedia_port *port = PJ_POOL_ZALLOC_T(pool, pjmedia_port);
        pj_str_t port_name;
        pj_strdup2_with_null(pool, &port_name, name.c_str());
        pjmedia_port_info_init(&port->info, &port_name, PJMEDIA_SIG_CLASS_APP('P', 'T', 'P'),
                               clock_rate, 1, 16, clock_rate * frame_ms / 1000);
        port->port_data.pdata = buffer;
        port->put_frame = &FrameTap::putFrame;
        port->get_frame = &FrameTap::getFrame;
        port->on_destroy = &FrameTap::onDestroy;
        pj_status_t status = pjmedia_port_init_grp_lock(port, pool, NULL);
        if (status != PJ_SUCCESS) {
            delete buffer;
            pj_pool_release(pool);
            fail(status, "pjmedia_port_init_grp_lock");
        }
        port_ = port;
        buffer_ = buffer;
        registerMediaPort2(port, pool);
    }

    /* Move the unread frames, oldest first, into buf (as many whole frames as fit); returns
     * the bytes written. lastReadStart() is then the first one's stream index. */
    unsigned read(char *buf, size_t size)
    {
        if (!buffer_)
            return 0;
        std::lock_guard<std::mutex> guard(buffer_->lock);
        const unsigned fb = buffer_->frame_bytes;
        unsigned long long available = buffer_->written - buffer_->read;
        unsigned long long n = size / fb < available ? size / fb : available;
        for (unsigned long long i = 0; i < n; ++i) {
            size_t slot = (size_t)((buffer_->read + i) % buffer_->capacity);
            std::memcpy(buf + i * fb, &buffer_->ring[slot * fb], fb);
        }
        last_start_ = buffer_->read;
        buffer_->read += n;
        return (unsigned)(n * fb);
    }

    /* The stream index (frames since the tap was created, dropped ones included) of the first
     * frame the last read() returned. */
    unsigned long long lastReadStart() const { return last_start_; }

    /* Frames the bridge put that were overwritten before they were read. */
    unsigned long long dropped()
    {
        if (!buffer_)
            return 0;
        std::lock_guard<std::mutex> guard(buffer_->lock);
        return buffer_->dropped;
    }

    unsigned frameBytes() const { return buffer_ ? buffer_->frame_bytes : 0; }

private:
    pjmedia_port *port_ = nullptr;
    TapBuffer *buffer_ = nullptr;  /* owned by port_ */
    unsigned long long last_start_ = 0;  /* the reader's own: only read() sets it */

    FrameTap(const FrameTap &) = delete;
    FrameTap &operator=(const FrameTap &) = delete;

    static void fail(pj_status_t status, const char *what) PJSUA2_THROW(pj::Error)
    {
        throw pj::Error(status, "FrameTap::createTap", what, std::string(), 0);
    }

    /* The clock thread: copy, count, return. Frames without audio (NONE) carry no samples. */
    static pj_status_t putFrame(pjmedia_port *port, pjmedia_frame *frame)
    {
        TapBuffer *b = static_cast<TapBuffer *>(port->port_data.pdata);
        if (frame->type != PJMEDIA_FRAME_TYPE_AUDIO || frame->size != b->frame_bytes)
            return PJ_SUCCESS;
        std::lock_guard<std::mutex> guard(b->lock);
        size_t slot = (size_t)(b->written % b->capacity);
        std::memcpy(&b->ring[slot * b->frame_bytes], frame->buf, b->frame_bytes);
        b->written += 1;
        if (b->written - b->read > b->capacity) {  /* the reader fell a whole ring behind */
            b->read = b->written - b->capacity;
            b->dropped += 1;
        }
        return PJ_SUCCESS;
    }

    /* A sink only: it never transmits. */
    static pj_status_t getFrame(pjmedia_port *, pjmedia_frame *frame)
    {
        frame->type = PJMEDIA_FRAME_TYPE_NONE;
        frame->size = 0;
        return PJ_SUCCESS;
    }

    static pj_status_t onDestroy(pjmedia_port *port)
    {
        TapBuffer *b = static_cast<TapBuffer *>(port->port_data.pdata);
        pj_pool_t *pool = b->pool;  /* the port itself lives in the pool */
        delete b;
        pj_pool_release(pool);
        return PJ_SUCCESS;
    }
};

}  // namespace puente

#endif
