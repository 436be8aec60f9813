// SPDX-License-Identifier: BSD-3-Clause

#pragma once

#include <cstdint>
#include <string>

#include "zeek/packet_analysis/protocol/ip/conn_key/fivetuple/Factory.h"

namespace zeek::iosource::pcapovertcp {

/**
 * The capture points' names as small numbers, for connection keys. A key
 * holds a fixed-size number, not the name; numbers are per process (only
 * the names reach logs, and they are the same in every worker). Main
 * thread only.
 */
namespace sender_names {

/// No sender: the packet did not come from this plugin's source.
constexpr uint32_t none = 0;

/**
 * The number of `name`, given on first use; `none` for an empty name.
 * Called by the source once per sender, so the table holds at most one
 * entry per sender the source has listed (src/shared/counters.rs bounds those).
 */
uint32_t Intern(const std::string& name);

/// The number of `name`, or a number no packet carries if the source has
/// not seen it (a script's lookup must not grow the table).
uint32_t Find(const std::string& name);

/// The name of `id`; nullptr for `none` and numbers never given.
const std::string* Name(uint32_t id);

/// The sender of the packet Zeek is analysing (set by the source before
/// each packet it returns).
void SetCurrent(uint32_t id);
uint32_t Current();

} // namespace sender_names

/**
 * ConnKey factory that adds the sender (capture point) to the 5-tuple, so
 * that the same 5-tuple seen by two senders is two connections, and fills
 * `conn_id_ctx$pcapovertcp_sender` with its name. Selected by
 * policy/frameworks/conn_key/pcapovertcp/sender.zeek.
 */
class SenderConnKeyFactory : public zeek::conn_key::fivetuple::Factory {
public:
    static zeek::conn_key::FactoryPtr Instantiate() { return std::make_unique<SenderConnKeyFactory>(); }

protected:
    zeek::ConnKeyPtr DoNewConnKey() const override;
    zeek::expected<zeek::ConnKeyPtr, std::string> DoConnKeyFromVal(const zeek::Val& v) const override;
};

} // namespace zeek::iosource::pcapovertcp
