// SPDX-License-Identifier: BSD-3-Clause

#pragma once

#include "zeek/plugin/Plugin.h"

namespace zeek::plugin::Zeek_PcapOverTcp {

class Plugin : public zeek::plugin::Plugin {
protected:
    zeek::plugin::Configuration Configure() override;
    void HookDrainEvents() override;

private:
    bool source_stopped = false; // By HookDrainEvents(), once.
};

extern Plugin plugin;

} // namespace zeek::plugin::Zeek_PcapOverTcp
