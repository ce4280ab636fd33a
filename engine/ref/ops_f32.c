/* The reference ops in float. */
#define real float
#define SFX(name) name##_f32
#define REAL_TINY 1.17549435e-38f
#include "engine/ref/ops.inc"
