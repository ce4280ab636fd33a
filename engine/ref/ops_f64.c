/* The reference ops in double: the oracle of the gradient checks. */
#define real double
#define SFX(name) name##_f64
#define REAL_TINY 2.2250738585072014e-308
#include "engine/ref/ops.inc"
