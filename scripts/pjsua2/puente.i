/* SWIG interface for Puente's additions to the pjsua2 module: the FrameTap (frame_tap.hpp) and the
 * jitter-buffer policy (jitter.hpp). build.sh appends an %include of this file to pjsua2.i, so they
 * land in the pjsua2 module (pjsua2.FrameTap, pjsua2.keepEveryFrame). No directors: the clock thread
 * never calls into Python. */
%{
#include "frame_tap.hpp"
#include "jitter.hpp"
%}

%include <pybuffer.i>
/* tap.read(bytearray) fills the caller's buffer in place (the GIL is released while it copies). */
%pybuffer_mutable_binary(char *buf, size_t size);

%ignore puente::TapBuffer;
%include "frame_tap.hpp"
%include "jitter.hpp"
