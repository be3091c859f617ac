// The argument checks of every driver, CPU and CUDA alike (validate.cpp): each checks every
// view of one op's arguments (shape, dtype, device, contiguity; on CPU also the ids the driver
// will dereference) and throws std::invalid_argument naming the argument.
#pragma once

#include "drivers.hpp"

namespace drift {

void validate(const LcsArgs& args, DeviceKind device);
void validate(const TokenLogpsForwardArgs& args, DeviceKind device);
void validate(const TokenLogpsBackwardArgs& args, DeviceKind device);
void validate(const OalForwardArgs& args, DeviceKind device);
void validate(const OalBackwardArgs& args, DeviceKind device);

}  // namespace drift
