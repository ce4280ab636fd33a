/* The network: a spec, a backend, the flat parameter / gradient / Adam buffers, and a plan
 * for the current (batch, h, w). This is the engine's public API; the pipeline uses only it. */
#ifndef MS_NET_H
#define MS_NET_H

#include "engine/backend.h"
#include "engine/spec.h"

typedef struct ms_net ms_net_t;

/* Allocates and initialises the parameters from seed (PyTorch's default initialisation,
 * or the layers' bias_init / b_init). */
ms_status_t ms_net_create(ms_net_t **net, const ms_spec_t *spec, ms_backend_t *be,
                          ms_dtype_t dtype, uint64_t seed);
void ms_net_free(ms_net_t *net);

/* Prepares for batches of n images of h x w; free when unchanged. */
ms_status_t ms_net_plan(ms_net_t *net, int n, int h, int w, int train);
const ms_plan_t *ms_net_current_plan(const ms_net_t *net);

/* x: host (N,C,H,W) in the net's dtype. pass may be NULL when not training. */
ms_status_t ms_net_forward(ms_net_t *net, const void *x, const ms_pass_t *pass);
/* t: host (N,K) targets. */
ms_status_t ms_net_loss(ms_net_t *net, const void *t, double *loss);
/* Zeroes the gradients, then runs backward through every layer, calling the backward hook
 * (if set) after each. With input_grad the gradient w.r.t. the input is kept
 * (MS_OUT_INPUT_GRAD). */
ms_status_t ms_net_backward(ms_net_t *net, const ms_pass_t *pass, int input_grad);
/* The backward hook: called by ms_net_backward right after backward() of layer l has been
 * issued, l from the last layer down, with the layer's parameters [off, off + n) (elements of
 * the flat buffers; n may be 0). Those gradients, and those of every later layer, are final
 * once the work the backend has been given so far has run: a device backend may still be
 * computing them, so the hook must order its use after that work (the CUDA backend: an event
 * on its stream). The gradient all-reduce (pipeline/dist/allreduce.h) starts a bucket here so
 * that it overlaps the rest of the backward pass. A failure stops the backward pass. */
typedef ms_status_t (*ms_net_hook_t)(void *ctx, int layer, size_t off, size_t n);
/* fn NULL removes the hook. */
void ms_net_set_backward_hook(ms_net_t *net, ms_net_hook_t fn, void *ctx);
/* One Adam step over all parameters, then Noisy-AND thresholds clamped into [0,1]. */
ms_status_t ms_net_adam(ms_net_t *net, const ms_adam_t *hp);
/* Guided backpropagation from the MIL layer (paper §2.4) after a forward pass; the Jacobian
 * map is then MS_OUT_INPUT_GRAD. cls < 0: all classes. */
ms_status_t ms_net_guided(ms_net_t *net, int cls);
ms_status_t ms_net_output(ms_net_t *net, ms_output_t which, void *host);

size_t ms_net_nparams(const ms_net_t *net);
ms_dtype_t ms_net_dtype(const ms_net_t *net);
const ms_spec_t *ms_net_spec(const ms_net_t *net);
ms_backend_t *ms_net_backend(ms_net_t *net);
/* Flat buffers in backend memory (for all-reduce and checkpoints). */
void *ms_net_params(ms_net_t *net);
void *ms_net_grads(ms_net_t *net);
void *ms_net_adam_m(ms_net_t *net);
void *ms_net_adam_v(ms_net_t *net);
long ms_net_step(const ms_net_t *net);
void ms_net_set_step(ms_net_t *net, long step);
/* Host copies in the net's dtype; `which` is one of the four buffers above. */
ms_status_t ms_net_read(ms_net_t *net, const void *which, void *host);
ms_status_t ms_net_write(ms_net_t *net, void *which, const void *host);

#endif
