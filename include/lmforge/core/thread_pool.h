// Moved: the pool lives in the kernels layer, which every layer above may use.
#pragma once
#include "lmforge/kernels/thread_pool.h"
