// SPDX-License-Identifier: BSD-3-Clause

#include "PcapOverTcpSource.h"

#include <pcap.h>

#include "zeek/DebugLogger.h"
#include "zeek/Reporter.h"
#include "zeek/RunState.h"
#include "zeek/iosource/BPF_Program.h"
#include "zeek/iosource/Manager.h"
#include "zeek/iosource/Packet.h"
#include "zeek/iosource/pcap/pcap.bif.h"
#include "zeek/telemetry/Manager.h"

#include "ConnKeySender.h"
#include "Plugin.h"
#include "pcapovertcp.bif.h"

namespace zeek::iosource::pcapovertcp {

namespace rs = ::pcapovertcp::rs;

PcapOverTcpSource::PcapOverTcpSource(const std::string& path, bool is_live) {
    props.path = path;
    props.is_live = is_live;
}

PcapOverTcpSource::~PcapOverTcpSource() { Close(); }

PktSrc* PcapOverTcpSource::Instantiate(const std::string& path, bool is_live) {
    return new PcapOverTcpSource(path, is_live);
}

void PcapOverTcpSource::Open() {
    rs::Options options;
    options.buffer_size = BifConst::PcapOverTcp::buffer_size;
    options.max_caplen = BifConst::PcapOverTcp::max_caplen;
    options.reconnect = BifConst::PcapOverTcp::reconnect;
    options.reconnect_min = BifConst::PcapOverTcp::reconnect_min;
    options.reconnect_max = BifConst::PcapOverTcp::reconnect_max;
    options.open_timeout = BifConst::PcapOverTcp::open_timeout;
    options.drop_when_full = BifConst::PcapOverTcp::drop_when_full;
    options.keepalive_idle = BifConst::PcapOverTcp::keepalive_idle;
    options.keepalive_interval = BifConst::PcapOverTcp::keepalive_interval;
    options.keepalive_probes = BifConst::PcapOverTcp::keepalive_probes;
    options.idle_timeout = BifConst::PcapOverTcp::idle_timeout;
    options.merge_window = BifConst::PcapOverTcp::merge_window;
    options.merge_max_hold = BifConst::PcapOverTcp::merge_max_hold;
    options.merge_max_skew = BifConst::PcapOverTcp::merge_max_skew;
    options.max_senders = BifConst::PcapOverTcp::max_senders;
    options.header_timeout = BifConst::PcapOverTcp::header_timeout;

    options.tls_ca_file = BifConst::PcapOverTcp::tls_ca_file->ToStdString();
    options.tls_server_name = BifConst::PcapOverTcp::tls_server_name->ToStdString();
    options.tls_cert_file = BifConst::PcapOverTcp::tls_cert_file->ToStdString();
    options.tls_key_file = BifConst::PcapOverTcp::tls_key_file->ToStdString();
    options.tls_require_client_cert = BifConst::PcapOverTcp::tls_require_client_cert;

    // An enum and sets are no BIF constants: read them by name.
    if ( auto names = id::find_const<TableVal>("PcapOverTcp::tls_allowed_names") ) {
        auto list = names->ToPureListVal();

        for ( int i = 0; i < list->Length(); ++i )
            options.tls_allowed_names.push_back(list->Idx(i)->AsStringVal()->ToStdString());
    }

    if ( auto by = id::find_const("PcapOverTcp::share_by") )
        options.share_by = static_cast<uint8_t>(by->AsEnum());

    if ( auto allowed = id::find_const<TableVal>("PcapOverTcp::allowed_senders") ) {
        auto subnets = allowed->ToPureListVal();

        for ( int i = 0; i < subnets->Length(); ++i )
            options.allowed_senders.push_back(subnets->Idx(i)->AsSubNet().AsString());
    }

    // The path as bytes: an interface name that is not UTF-8 is the core's
    // error to report, not an exception from rust::Str.
    auto path = ::rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t*>(props.path.data()), props.path.size());

    try {
        source = std::make_shared<::rust::Box<rs::PcapOverTcp>>(rs::start(path, options));
    } catch ( const std::exception& e ) {
        Error(e.what());
        return;
    }

    auto& src = *source;

    // Open at once, before any stream has arrived, as a listening source
    // does: packets carry their own link type (and the capture filter is
    // compiled for each), so nothing here needs the stream's header. Zeek
    // then runs while the source waits for its feed (zeek_init, the
    // cluster, the metrics endpoint); the wait is reported within about a
    // second, and a start-up that fails for good (open_timeout, a refused
    // connect without reconnect, ...) ends Zeek from ExtractNextPacket().
    ReportMessages();

    // The wake fd is registered here, after Opened() has succeeded, rather
    // than by Opened() itself: when Opened() fails (a filter that cannot be
    // compiled), it calls Close(), whose Closed() would unregister an fd it
    // never registered.
    props.selectable_fd = -1;
    props.link_type = src->link_type();
    props.netmask = NETMASK_UNKNOWN;
    props.is_live = true;
    Opened(props);

    if ( ! IsOpen() )
        return;

    if ( ! iosource_mgr->RegisterFd(src->selectable_fd(), this) )
        reporter->FatalError("Failed to register the PCAP-over-IP source's fd with iosource_mgr");

    fd_registered = true;
    UpdateMetrics();
}

void PcapOverTcpSource::Close() {
    if ( ! source )
        return;

    if ( fd_registered ) {
        iosource_mgr->UnregisterFd((*source)->selectable_fd(), this);
        fd_registered = false;
    }

    // The handle stays: its statistics remain readable after the end, as
    // Zeek's scripts read them in zeek_done.
    (*source)->close();
    RaiseEvents();
    ReportMessages();

    if ( IsOpen() )
        Closed();
}

void PcapOverTcpSource::ZeekStopping() {
    if ( ! iosource_mgr )
        return;

    auto* src = dynamic_cast<PcapOverTcpSource*>(iosource_mgr->GetPktSrc());

    if ( ! src || ! src->source )
        return;

    // Idempotent in the core: Close() then finds it closed.
    (*src->source)->close();
    src->RaiseEvents();
    src->ReportMessages();
}

bool PcapOverTcpSource::ExtractNextPacket(Packet* pkt) {
    returned_packet = false;

    if ( ! source || ! IsOpen() )
        return false;

    auto& src = *source;

    if ( src->has_messages() ) {
        // Events first: taking them may add a message (events dropped).
        RaiseEvents();
        ReportMessages();
    }

    rs::PacketInfo info{};

    while ( true ) {
        switch ( src->next_packet(info) ) {
            case rs::Status::Packet: break;
            case rs::Status::Empty: return false;
            case rs::Status::Failed:
                // What Zeek does when a source's Open() fails, with the same
                // line: the source never had a stream to analyse.
                ReportMessages();
                reporter->FatalError("problem with interface pcapovertcp::%s (%s)", props.path.c_str(),
                                     std::string(src->failure()).c_str());
                return false; // Not reached: FatalError exits.
            case rs::Status::Ended:
            default: Close(); return false;
        }

        struct timeval ts;
        ts.tv_sec = static_cast<time_t>(info.ts_sec);
        ts.tv_usec = static_cast<suseconds_t>(info.ts_usec);

        if ( filter_index >= 0 ) {
            struct pcap_pkthdr hdr;
            hdr.ts = ts;
            hdr.caplen = info.caplen;
            hdr.len = info.wirelen;

            if ( ! FilterAccepts(info.link_type, &hdr, info.data) ) {
                src->packet_not_delivered(true);
                continue;
            }
        }

        pkt->Init(info.link_type, &ts, info.caplen, info.wirelen, info.data);

        // As Zeek's pcap source does: an empty record is a weird, not a packet.
        if ( info.caplen == 0 || info.wirelen == 0 ) {
            Weird("empty_pcap_header", pkt);
            src->packet_not_delivered(false);
            continue;
        }

        // For the sender connection key (a no-op without its policy script).
        sender_names::SetCurrent(SenderId(info.input));
        returned_packet = true;
        return true;
    }
}

uint32_t PcapOverTcpSource::SenderId(uint32_t input) {
    if ( input < sender_ids.size() && sender_ids[input] != sender_names::none )
        return sender_ids[input];

    // A connect endpoint is named as written; a listening sender (a bare IP
    // address) by PcapOverTcp::sender_names if a subnet there holds it.
    std::string name((*source)->sender_address(input));

    if ( IPAddr::IsValid(name.c_str()) ) {
        if ( const auto& id = id::find("PcapOverTcp::sender_names"); id && id->GetVal() ) {
            auto* names = id->GetVal()->AsTableVal();
            if ( const auto& v = names->Find(make_intrusive<AddrVal>(name)) )
                name = v->AsStringVal()->ToStdString();
        }
    }

    auto sender = sender_names::Intern(name);

    if ( input < 65536 ) { // Far above the core's bound; never grows for ever.
        if ( input >= sender_ids.size() )
            sender_ids.resize(input + 1, sender_names::none);
        sender_ids[input] = sender;
    }

    return sender;
}

void PcapOverTcpSource::DoneWithPacket() {
    // The packet's bytes stay valid until the next ExtractNextPacket(), which
    // is when the Rust core releases them.
}

double PcapOverTcpSource::GetNextTimeout() {
    // After a packet more are likely queued: come straight back, as PktSrc
    // does for sources without an fd. The wake fd turns readable only to
    // wake an idle Zeek (src/handoff/queue.rs), so this is what keeps a busy one
    // coming on its poll turns (each io_poll_interval_live-th packet), and
    // spares each of them a ppoll() with a timeout from Zeek's timers.
    if ( returned_packet && ! run_state::is_processing_suspended() && ! run_state::pseudo_realtime )
        return 0.0;

    // The base class would spin (Pcap::non_fd_timeout) since Opened() saw no
    // fd; the wake fd is registered by Open() itself, so wait for it.
    if ( fd_registered && ! run_state::pseudo_realtime )
        return -1.0;

    return PktSrc::GetNextTimeout();
}

bool PcapOverTcpSource::PrecompileFilter(int index, const std::string& filter) {
    filter_texts[index] = filter;

    for ( auto it = other_link_filters.begin(); it != other_link_filters.end(); )
        it = it->first.first == index ? other_link_filters.erase(it) : std::next(it);

    // Compiled for the stream's link type by Zeek, which reports a bad filter.
    return PktSrc::PrecompileBPFFilter(index, filter);
}

bool PcapOverTcpSource::SetFilter(int index) {
    auto* code = GetBPFFilter(index);

    if ( ! code ) {
        Error(util::fmt("No precompiled BPF filter for index %d", index));
        return false;
    }

    if ( code->GetState() != FilterState::OK )
        return false;

    auto text = filter_texts.find(index);
    filter_index = text == filter_texts.end() || text->second.empty() ? -1 : index;
    return true;
}

bool PcapOverTcpSource::FilterAccepts(int link_type, const struct pcap_pkthdr* hdr, const u_char* data) {
    // As Zeek's pcap source: NFLOG does not support BPF filters.
    if ( link_type == DLT_NFLOG )
        return true;

    if ( link_type == LinkType() )
        return ApplyBPFFilter(filter_index, hdr, data);

    auto* code = FilterFor(link_type);

    if ( ! code || code->MatchesAnything() )
        return true;

    return pcap_offline_filter(code->GetProgram(), hdr, data) != 0;
}

detail::BPF_Program* PcapOverTcpSource::FilterFor(int link_type) {
    auto key = std::make_pair(filter_index, link_type);

    if ( auto it = other_link_filters.find(key); it != other_link_filters.end() )
        return it->second.get();

    const auto& text = filter_texts[filter_index];
    auto code = std::make_unique<detail::BPF_Program>();

    if ( ! code->Compile(BifConst::Pcap::snaplen, link_type, text.c_str(), Netmask()) ) {
        reporter
            ->Warning("%s: capture filter \"%s\" cannot be compiled for link type %d (%s); its packets pass unfiltered",
                      props.path.c_str(), text.c_str(), link_type, code->GetStateMessage().c_str());
        code.reset();
    }

    auto* result = code.get();
    other_link_filters.emplace(key, std::move(code));
    return result;
}

void PcapOverTcpSource::Statistics(Stats* stats) {
    if ( ! source ) { // Open() failed.
        stats->received = stats->dropped = stats->link = stats->bytes_received = 0;
        stats->filtered = 0;
        return;
    }

    auto s = (*source)->stats();
    stats->received = s.received;
    stats->dropped = s.dropped;
    stats->link = s.link;
    stats->bytes_received = s.bytes_received;
    stats->filtered = s.filtered;
}

// Fills a PcapOverTcp::Stats or PcapOverTcp::Sender record by field name:
// the core's counter list (src/shared/counters.rs) and the record types
// (scripts/types.zeek) are the two places that define them, and
// src/shared/counters.rs's test holds them equal.
static void AssignCounters(RecordVal* rec, const ::rust::Vec<rs::Counter>& counters) {
    const auto& type = rec->GetType<RecordType>();

    for ( const auto& c : counters ) {
        std::string field(c.field);
        int offset = type->FieldOffset(field.c_str());

        if ( offset < 0 ) {
            reporter->InternalWarning("%s has no field \"%s\"", type->GetName().c_str(), field.c_str());
            continue;
        }

        if ( c.is_interval )
            rec->AssignInterval(offset, c.seconds);
        else
            rec->Assign(offset, c.count);
    }

    for ( int i = 0; i < type->NumFields(); ++i )
        if ( ! rec->HasField(i) )
            reporter->InternalWarning("%s field \"%s\" has no counter", type->GetName().c_str(), type->FieldName(i));
}

RecordValPtr PcapOverTcpSource::StatsVal() {
    auto* src = dynamic_cast<PcapOverTcpSource*>(iosource_mgr->GetPktSrc());
    bool ours = src && src->source;

    auto senders = make_intrusive<VectorVal>(id::find_type<VectorType>("PcapOverTcp::SenderList"));

    if ( ours ) {
        for ( const auto& s : (*src->source)->senders() ) {
            auto sender = make_intrusive<RecordVal>(BifType::Record::PcapOverTcp::Sender);
            sender->Assign(sender->GetType<RecordType>()->FieldOffset("address"), std::string(s.address));
            AssignCounters(sender.get(), s.counters);
            senders->Append(std::move(sender));
        }
    }

    auto rec = make_intrusive<RecordVal>(BifType::Record::PcapOverTcp::Stats);
    rec->Assign(rec->GetType<RecordType>()->FieldOffset("senders"), std::move(senders));
    AssignCounters(rec.get(), ours ? (*src->source)->counters() : rs::zero_counters());
    return rec;
}

void PcapOverTcpSource::UpdateMetrics() {
    if ( ! source || ! telemetry_mgr )
        return;

    auto shared = source;
    const auto& src = *source;

    if ( gauge_metrics.empty() ) {
        std::string iface = "pcapovertcp::" + props.path;
        gauge_metrics.push_back(telemetry_mgr->GaugeInstance("zeek", "pcapovertcp_buffer_used", {{"endpoint", iface}},
                                                             "Bytes of the buffer in use", "bytes", [shared]() {
                                                                 return static_cast<double>((*shared)->buffer().used);
                                                             }));
        gauge_metrics.push_back(
            telemetry_mgr->GaugeInstance("zeek", "pcapovertcp_buffer_capacity", {{"endpoint", iface}},
                                         "PcapOverTcp::buffer_size", "bytes",
                                         [shared]() { return static_cast<double>((*shared)->buffer().capacity); }));
    }

    // One instance per sender and counter, in the core's order, so that
    // a callback names its value by two indices. Senders are only ever
    // added, so the count tells whether there is a new one.
    if ( src->sender_count() == senders_exported )
        return;

    auto senders = src->senders();

    for ( size_t i = senders_exported; i < senders.size(); ++i ) {
        std::string endpoint(senders[i].address);
        const auto& counters = senders[i].counters;

        for ( size_t f = 0; f < counters.size(); ++f ) {
            const auto& c = counters[f];
            std::string name = "pcapovertcp_" + std::string(c.field);
            std::string help = "PcapOverTcp::Sender$" + std::string(c.field);
            auto value = [shared, i, f]() { return (*shared)->sender_value(i, f); };

            if ( c.is_level )
                gauge_metrics.push_back(telemetry_mgr->GaugeInstance("zeek", name, {{"endpoint", endpoint}}, help,
                                                                     c.is_interval ? "seconds" : "", value));
            else
                counter_metrics.push_back(telemetry_mgr->CounterInstance("zeek", name, {{"endpoint", endpoint}}, help,
                                                                         c.is_interval ? "seconds" : "", value));
        }
    }

    senders_exported = senders.size();
}

void PcapOverTcpSource::ReportMessages() {
    if ( ! source )
        return;

    // A new sender announces itself with a message: export it too.
    if ( IsOpen() )
        UpdateMetrics();

    for ( const auto& line : (*source)->take_messages() ) {
        std::string msg(line.message);

        switch ( line.level ) {
            case rs::LogLevel::Error: reporter->Error("%s", msg.c_str()); break;
            case rs::LogLevel::Warning: reporter->Warning("%s", msg.c_str()); break;
            case rs::LogLevel::Info: Info(msg); break;
            case rs::LogLevel::Debug:
            default: PLUGIN_DBG_LOG(plugin::Zeek_PcapOverTcp::plugin, "%s", msg.c_str()); break;
        }
    }
}

// Raises one PcapOverTcp:: event per fact the core queued (src/shared/facts.rs).
// Here, on Zeek's main thread: the core's threads never call Zeek. Not
// from Open(), which runs before zeek_init: an event raised there would
// reach scripts before their zeek_init (and the notice framework's log
// stream) has run. Facts wait in the core until the first
// ExtractNextPacket().
void PcapOverTcpSource::RaiseEvents() {
    namespace ev = zeek::BifEvent::PcapOverTcp;
    auto str = [](const ::rust::String& s) { return make_intrusive<StringVal>(std::string(s)); };

    for ( const auto& e : (*source)->take_events() ) {
        switch ( e.kind ) {
            case rs::EventKind::FeedLost:
                if ( ::PcapOverTcp::feed_lost )
                    ev::enqueue_feed_lost(nullptr, str(e.source), str(e.reason));
                break;
            case rs::EventKind::FeedRestored:
                if ( ::PcapOverTcp::feed_restored )
                    ev::enqueue_feed_restored(nullptr, str(e.source), e.seconds);
                break;
            case rs::EventKind::SenderConnected:
                if ( ::PcapOverTcp::sender_connected )
                    ev::enqueue_sender_connected(nullptr, str(e.source), str(e.sender));
                break;
            case rs::EventKind::SenderLeft:
                if ( ::PcapOverTcp::sender_left )
                    ev::enqueue_sender_left(nullptr, str(e.source), str(e.sender), e.count);
                break;
            case rs::EventKind::SenderRefused:
                if ( ::PcapOverTcp::sender_refused )
                    ev::enqueue_sender_refused(nullptr, str(e.source), str(e.sender), str(e.refusal), str(e.reason));
                break;
            case rs::EventKind::UpstreamDrops:
                if ( ::PcapOverTcp::capture_loss_upstream )
                    ev::enqueue_capture_loss_upstream(nullptr, str(e.source), str(e.sender), e.count, e.total);
                break;
            default: break;
        }
    }
}

} // namespace zeek::iosource::pcapovertcp
