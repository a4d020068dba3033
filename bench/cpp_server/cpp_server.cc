// cpp_server: the comparison target of bench/run.sh. grpc C++ (Debian's
// libgrpc++-dev 1.51) serving the methods the benchmark calls on our
// tests/interop/interop_server:
//
//   grpc.health.v1.Health/Check           SERVING for "" and grpc.testing.TestService
//   grpc.testing.TestService/EmptyCall
//   grpc.testing.TestService/UnaryCall    response_size zero bytes, like ours
//   grpc.testing.TestService/FullDuplexCall
//                                         one response per response_parameters entry
//
//   cpp_server [--host ADDR] [--port N] [--workers N] [--mode callback|sync]
//
// --mode callback (default) uses the callback API; --mode sync the synchronous
// API with --workers completion queues and pollers (min 1, max 2 * workers).
// The callback API sizes its own thread pool; bench/run.sh confines the whole
// process to one CPU with taskset either way, so thread counts cannot buy it
// more CPU than our one worker gets.
//
// Not product code and not part of the default build (bench/CMakeLists.txt,
// option CHAT_BENCH_CPP).
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/testing/test.grpc.pb.h"

namespace
{

using grpc::CallbackServerContext;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using grpc::testing::Empty;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;

constexpr int kMaxPayload = 4 << 20;

bool health_status(const std::string &service, HealthCheckResponse *resp)
{
    if (!service.empty() && service != "grpc.testing.TestService")
        return false;
    resp->set_status(HealthCheckResponse::SERVING);
    return true;
}

Status fill_unary(const SimpleRequest *req, SimpleResponse *resp)
{
    if (req->response_size() < 0 || req->response_size() > kMaxPayload)
        return Status(StatusCode::INVALID_ARGUMENT, "response_size out of range");
    auto *p = resp->mutable_payload();
    p->set_type(grpc::testing::COMPRESSABLE);
    p->mutable_body()->assign(static_cast<size_t>(req->response_size()), '\0');
    return Status::OK;
}

// --- callback API ------------------------------------------------------------------------

class HealthCallback final : public grpc::health::v1::Health::CallbackService
{
    grpc::ServerUnaryReactor *Check(CallbackServerContext *ctx, const HealthCheckRequest *req,
                                    HealthCheckResponse *resp) override
    {
        auto *r = ctx->DefaultReactor();
        if (health_status(req->service(), resp))
            r->Finish(Status::OK);
        else
            r->Finish(Status(StatusCode::NOT_FOUND, "unknown service"));
        return r;
    }
};

// Reads and writes overlap: the next read is started as soon as one completes,
// responses queue in |out_| and are written one at a time (the callback API
// allows one outstanding read and one outstanding write per stream).
class DuplexReactor final
    : public grpc::ServerBidiReactor<StreamingOutputCallRequest, StreamingOutputCallResponse>
{
  public:
    DuplexReactor()
    {
        StartRead(&req_);
    }

    void OnReadDone(bool ok) override
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!ok) {
            reads_done_ = true;
            maybe_finish();
            return;
        }
        for (const auto &rp : req_.response_parameters()) {
            if (rp.size() < 0 || rp.size() > kMaxPayload) {
                if (!finished_) {
                    finished_ = true;
                    Finish(Status(StatusCode::INVALID_ARGUMENT, "bad response parameters"));
                }
                return;
            }
            out_.push_back(rp.size());
        }
        pump();
        StartRead(&req_);
    }

    void OnWriteDone(bool ok) override
    {
        std::lock_guard<std::mutex> lk(mu_);
        writing_ = false;
        if (!ok) {
            if (!finished_) {
                finished_ = true;
                Finish(Status(StatusCode::UNAVAILABLE, "write failed"));
            }
            return;
        }
        pump();
        maybe_finish();
    }

    void OnDone() override
    {
        delete this;
    }

  private:
    void pump()
    {
        if (writing_ || finished_ || out_.empty())
            return;
        int size = out_.front();
        out_.pop_front();
        auto *p = resp_.mutable_payload();
        p->set_type(grpc::testing::COMPRESSABLE);
        p->mutable_body()->assign(static_cast<size_t>(size), '\0');
        writing_ = true;
        StartWrite(&resp_);
    }

    void maybe_finish()
    {
        if (reads_done_ && !writing_ && out_.empty() && !finished_) {
            finished_ = true;
            Finish(Status::OK);
        }
    }

    std::mutex mu_;
    StreamingOutputCallRequest req_;
    StreamingOutputCallResponse resp_;
    std::deque<int> out_; // response sizes not yet written
    bool writing_ = false;
    bool reads_done_ = false;
    bool finished_ = false;
};

class TestCallback final : public grpc::testing::TestService::CallbackService
{
    grpc::ServerUnaryReactor *EmptyCall(CallbackServerContext *ctx, const Empty *, Empty *) override
    {
        auto *r = ctx->DefaultReactor();
        r->Finish(Status::OK);
        return r;
    }

    grpc::ServerUnaryReactor *UnaryCall(CallbackServerContext *ctx, const SimpleRequest *req,
                                        SimpleResponse *resp) override
    {
        auto *r = ctx->DefaultReactor();
        r->Finish(fill_unary(req, resp));
        return r;
    }

    grpc::ServerBidiReactor<StreamingOutputCallRequest, StreamingOutputCallResponse> *
    FullDuplexCall(CallbackServerContext *) override
    {
        return new DuplexReactor();
    }
};

// --- sync API ----------------------------------------------------------------------------

class HealthSync final : public grpc::health::v1::Health::Service
{
    Status Check(ServerContext *, const HealthCheckRequest *req, HealthCheckResponse *resp) override
    {
        if (health_status(req->service(), resp))
            return Status::OK;
        return Status(StatusCode::NOT_FOUND, "unknown service");
    }
};

class TestSync final : public grpc::testing::TestService::Service
{
    Status EmptyCall(ServerContext *, const Empty *, Empty *) override
    {
        return Status::OK;
    }

    Status UnaryCall(ServerContext *, const SimpleRequest *req, SimpleResponse *resp) override
    {
        return fill_unary(req, resp);
    }

    Status FullDuplexCall(ServerContext *,
                          grpc::ServerReaderWriter<StreamingOutputCallResponse,
                                                   StreamingOutputCallRequest> *stream) override
    {
        StreamingOutputCallRequest req;
        StreamingOutputCallResponse resp;
        while (stream->Read(&req)) {
            for (const auto &rp : req.response_parameters()) {
                if (rp.size() < 0 || rp.size() > kMaxPayload)
                    return Status(StatusCode::INVALID_ARGUMENT, "bad response parameters");
                auto *p = resp.mutable_payload();
                p->set_type(grpc::testing::COMPRESSABLE);
                p->mutable_body()->assign(static_cast<size_t>(rp.size()), '\0');
                if (!stream->Write(resp))
                    return Status(StatusCode::UNAVAILABLE, "write failed");
            }
        }
        return Status::OK;
    }
};

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int)
{
    g_stop = 1;
}

void usage(const char *argv0)
{
    std::fprintf(
        stderr, "usage: %s [--host ADDR] [--port N] [--workers N] [--mode callback|sync]\n", argv0);
}

} // namespace

int main(int argc, char **argv)
{
    std::string host = "127.0.0.1";
    int port = 10000;
    int workers = 1;
    std::string mode = "callback";
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 < argc && a == "--host") {
            host = argv[++i];
        } else if (i + 1 < argc && a == "--port") {
            port = std::atoi(argv[++i]);
        } else if (i + 1 < argc && a == "--workers") {
            workers = std::atoi(argv[++i]);
        } else if (i + 1 < argc && a == "--mode") {
            mode = argv[++i];
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (workers < 1 || (mode != "callback" && mode != "sync")) {
        usage(argv[0]);
        return 2;
    }

    HealthCallback health_cb;
    TestCallback test_cb;
    HealthSync health_sync;
    TestSync test_sync;

    grpc::ServerBuilder b;
    std::string addr = host + ":" + std::to_string(port);
    b.AddListeningPort(addr, grpc::InsecureServerCredentials());
    // The same per-connection stream limit as ours (rpc_server_config default).
    b.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 100);
    if (mode == "callback") {
        b.RegisterService(&health_cb);
        b.RegisterService(&test_cb);
    } else {
        b.RegisterService(&health_sync);
        b.RegisterService(&test_sync);
        b.SetSyncServerOption(grpc::ServerBuilder::NUM_CQS, workers);
        b.SetSyncServerOption(grpc::ServerBuilder::MIN_POLLERS, 1);
        b.SetSyncServerOption(grpc::ServerBuilder::MAX_POLLERS, 2 * workers);
    }
    std::unique_ptr<grpc::Server> server = b.BuildAndStart();
    if (!server) {
        std::fprintf(stderr, "cpp_server: cannot listen on %s\n", addr.c_str());
        return 1;
    }
    std::fprintf(stderr, "cpp_server: grpc %s, %s API, listening on %s, pid %d\n",
                 grpc::Version().c_str(), mode.c_str(), addr.c_str(), static_cast<int>(getpid()));

    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    while (!g_stop)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return 0;
}
