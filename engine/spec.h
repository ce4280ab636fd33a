/* The network as data: layer specifications read from the INI config (darknet style, one
 * section per layer, in file order), and their shapes resolved for an input size. The
 * architecture is only this table; another stack is a config change. */
#ifndef MS_SPEC_H
#define MS_SPEC_H

#include <stddef.h>

#include "engine/config.h"

typedef enum {
    MS_LAYER_CONV,
    MS_LAYER_MAXPOOL,
    MS_LAYER_AVGPOOL,
    MS_LAYER_RELU,
    MS_LAYER_DROPOUT,
    MS_LAYER_MIL, /* sigmoid + global MIL pooling over each class map: (N,K,h,w) -> (N,K) */
    MS_LAYER_FC   /* the head: (N,K) -> (N,K) logits, softmax or sigmoid */
} ms_layer_kind_t;

typedef enum {
    MS_MIL_NOISY_AND,
    MS_MIL_LSE,
    MS_MIL_GM,
    MS_MIL_MAX,
    MS_MIL_NOISY_OR,
    MS_MIL_ISR
} ms_mil_kind_t;

typedef enum { MS_HEAD_SOFTMAX, MS_HEAD_SIGMOID } ms_head_t;

typedef struct {
    ms_layer_kind_t kind;
    char name[32];     /* the config section; parameters are stored under this name */
    /* conv and pooling */
    int filters;       /* conv output channels */
    int size, stride, pad;
    int relu;          /* conv: ReLU after the convolution (fused where a backend can) */
    int ceil;          /* pooling: output size rounds up (Torch7 :ceil(), PyTorch ceil_mode) */
    double bias_init;  /* conv: NAN means PyTorch's default uniform(+-1/sqrt(fan_in)) */
    double gain;       /* conv: weights uniform(+-gain/sqrt(fan_in)); 1 is PyTorch's default,
                        * sqrt(6) He's uniform (unit gain through a ReLU) */
    /* dropout */
    double rate;
    /* mil */
    ms_mil_kind_t pool;
    double a;          /* Noisy-AND slope (fixed) */
    double r;          /* LSE and GM sharpness */
    double b_init;     /* Noisy-AND threshold b_i at start; kept in [0,1] */
    /* fc */
    ms_head_t head;
    double identity;   /* fc: start as identity x this scale (bias 0); 0: PyTorch default */
} ms_layer_spec_t;

typedef struct {
    int channels;      /* input channels */
    int classes;       /* K */
    int nlayers;
    ms_layer_spec_t *layers;
    int mil;           /* index of the MIL layer */
    int fc;            /* index of the FC head, or -1 */
} ms_spec_t;

/* A layer with its shapes resolved for one input size (per image; the batch is the plan's). */
typedef struct {
    const ms_layer_spec_t *spec;
    int index;
    int c, h, w;       /* input */
    int oc, oh, ow;    /* output */
    size_t w_off, nw;  /* weights in the flat parameter buffer (elements), PyTorch layout */
    size_t b_off, nb;  /* bias (conv, fc) or thresholds b_i (Noisy-AND) */
    double flops;      /* forward multiply-adds x2, per image */
    void *be;          /* the backend's state for this layer */
} ms_layer_t;

/* Reads [net] and every layer section; marks the keys it reads. */
ms_status_t ms_spec_from_config(ms_spec_t *spec, ms_config_t *cfg);
void ms_spec_free(ms_spec_t *spec);
/* Resolves shapes, parameter offsets and costs for an h x w input into layers[nlayers].
 * Fails with a clear message if the input is smaller than the network needs. */
ms_status_t ms_spec_resolve(const ms_spec_t *spec, int h, int w, ms_layer_t *layers);
size_t ms_spec_nparams(const ms_spec_t *spec);
/* Smallest input side the network accepts, and its receptive field and total stride. */
int ms_spec_min_input(const ms_spec_t *spec);
void ms_spec_geometry(const ms_spec_t *spec, int *receptive_field, int *stride);
/* Output size of a pooling/conv window along one axis; 0 if the input is too small. */
int ms_window_out(int in, int size, int stride, int pad, int ceil_mode);

const char *ms_layer_kind_name(ms_layer_kind_t k);
const char *ms_mil_name(ms_mil_kind_t k);

#endif
