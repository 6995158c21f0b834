/* SWIG interface for Puente's FrameTap (frame_tap.hpp); build.sh appends an %include of this file
 * to pjsua2.i, so the class lands in the pjsua2 module as pjsua2.FrameTap. Not a director: the
 * clock thread never calls into Python. */
%{
#include "frame_tap.hpp"
%}

%include <pybuffer.i>
/* tap.read(bytearray) fills the caller's buffer in place (the GIL is released while it copies). */
%pybuffer_mutable_binary(char *buf, size_t size);

%ignore puente::TapBuffer;
%include "frame_tap.hpp"
