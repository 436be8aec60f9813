// SPDX-License-Identifier: BSD-3-Clause

#include "ConnKeySender.h"

#include <cstring>
#include <unordered_map>
#include <vector>

#include "zeek/ID.h"
#include "zeek/Val.h"
#include "zeek/packet_analysis/protocol/ip/conn_key/IPBasedConnKey.h"

namespace zeek::iosource::pcapovertcp {

namespace sender_names {

namespace {

struct Table {
    std::vector<std::string> names{""}; // Index 0: none.
    std::unordered_map<std::string, uint32_t> ids;
    uint32_t current = none;
};

Table& table() {
    static Table t;
    return t;
}

// Never given: Intern() stops well below it (one per listed sender).
constexpr uint32_t unseen = UINT32_MAX;

} // namespace

uint32_t Intern(const std::string& name) {
    if ( name.empty() )
        return none;

    auto& t = table();

    if ( auto it = t.ids.find(name); it != t.ids.end() )
        return it->second;

    auto id = static_cast<uint32_t>(t.names.size());
    t.names.push_back(name);
    t.ids.emplace(name, id);
    return id;
}

uint32_t Find(const std::string& name) {
    if ( name.empty() )
        return none;

    auto& t = table();
    auto it = t.ids.find(name);
    return it == t.ids.end() ? unseen : it->second;
}

const std::string* Name(uint32_t id) {
    auto& t = table();
    return id == none || id >= t.names.size() ? nullptr : &t.names[id];
}

void SetCurrent(uint32_t id) { table().current = id; }

uint32_t Current() { return table().current; }

} // namespace sender_names

namespace {

// The conn_id_ctx field the policy script adds; -1 without it.
int SenderOffset() {
    static int offset = zeek::id::conn_id_ctx->FieldOffset("pcapovertcp_sender");
    return offset;
}

class SenderConnKey : public zeek::IPBasedConnKey {
public:
    SenderConnKey() {
        // The whole struct is the session key: no padding may differ.
        memset(static_cast<void*>(&key), 0, sizeof(key));
    }

    detail::PackedConnTuple& PackedTuple() override { return key.tuple; }
    const detail::PackedConnTuple& PackedTuple() const override { return key.tuple; }

    void SetSender(uint32_t id) { key.sender = id; }

protected:
    zeek::session::detail::Key DoSessionKey() const override {
        return {reinterpret_cast<const void*>(&key), sizeof(key), session::detail::Key::CONNECTION_KEY_TYPE};
    }

    void DoInit(const Packet& pkt) override { key.sender = sender_names::Current(); }

    void DoPopulateConnIdVal(zeek::RecordVal& conn_id, zeek::RecordVal& ctx) override {
        zeek::IPBasedConnKey::DoPopulateConnIdVal(conn_id, ctx);

        if ( conn_id.GetType() != id::conn_id || SenderOffset() < 0 )
            return;

        if ( const auto* name = sender_names::Name(key.sender) )
            ctx.Assign(SenderOffset(), *name);
    }

private:
    struct {
        struct detail::PackedConnTuple tuple;
        uint32_t sender;
    } __attribute__((packed, aligned)) key;
};

} // namespace

zeek::ConnKeyPtr SenderConnKeyFactory::DoNewConnKey() const { return std::make_unique<SenderConnKey>(); }

zeek::expected<zeek::ConnKeyPtr, std::string> SenderConnKeyFactory::DoConnKeyFromVal(const zeek::Val& v) const {
    // The 5-tuple as Zeek's own factory reads it, into our key (it calls
    // DoNewConnKey()).
    auto ck = zeek::conn_key::fivetuple::Factory::DoConnKeyFromVal(v);

    if ( ! ck.has_value() )
        return ck;

    if ( SenderOffset() < 0 )
        return zeek::unexpected<std::string>{"conn_id_ctx has no field pcapovertcp_sender"};

    static int ctx_offset = id::conn_id->FieldOffset("ctx");
    auto* ctx = v.AsRecordVal()->GetFieldAs<zeek::RecordVal>(ctx_offset);
    auto* key = static_cast<SenderConnKey*>(ck.value().get());

    if ( ctx && ctx->HasField(SenderOffset()) )
        key->SetSender(sender_names::Find(ctx->GetField<zeek::StringVal>(SenderOffset())->ToStdString()));

    return ck;
}

} // namespace zeek::iosource::pcapovertcp
