/* posgrad: train transformers from C. The one header to include.
 * Layers (each uses only those above it): tensor/ -> formats/ -> autograd/ -> nn/ -> optim/
 * (formats/: files over tensors; README "Layout"). */
#ifndef POSGRAD_H
#define POSGRAD_H

#include "tensor/tensor.h"
#include "tensor/tensor_list.h"
#include "tensor/gemm.h"
#include "tensor/threadpool.h"
#include "formats/png.h"
#include "formats/plot.h"
#include "formats/safetensors.h"
#include "autograd/graph.h"
#include "autograd/ops.h"
#include "autograd/gradcheck.h"
#include "autograd/flash.h"
#include "nn/module.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/state_dict.h"
#include "nn/posmod.h"
#include "nn/attention.h"
#include "nn/transformer.h"
#include "nn/sample.h"
#include "nn/kv_cache.h"
#include "nn/pos_sinusoidal.h"
#include "nn/pos_learned.h"
#include "nn/pos_rotary.h"
#include "nn/pos_alibi.h"
#include "nn/pos_dpb.h"
#include "nn/pos_xl.h"
#include "nn/pos_t5.h"
#include "nn/pos_rel.h"
#include "nn/pos_kerple.h"
#include "nn/pos_sandwich.h"
#include "nn/pos_fire.h"
#include "nn/pos_cope.h"
#include "nn/pos_fox.h"
#include "nn/local_attention.h"
#include "optim/optim.h"
#include "optim/checkpoint.h"

#endif
