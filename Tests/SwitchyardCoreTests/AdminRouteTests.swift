import Testing
@testable import SwitchyardCore

private func resolve(_ method: String, _ path: String) -> Result<AdminRoute, AdminRouteError> {
    AdminRoute.resolve(method: method, path: path)
}

private func post(_ target: String, _ headers: HTTPHeaders = [:]) -> HTTPRequest {
    HTTPRequest(method: "POST", target: target, headers: headers)
}

@Suite struct AdminRouteTests {
    @Test func readRoutes() {
        #expect(resolve("GET", "/metrics") == .success(.metrics))
        #expect(resolve("GET", "/status") == .success(.status))
        #expect(resolve("GET", "/healthz") == .success(.healthz))
        #expect(resolve("GET", "/readyz") == .success(.readyz))
        #expect(resolve("HEAD", "/metrics") == .success(.metrics))
        for route in [AdminRoute.metrics, .status, .healthz, .readyz] {
            #expect(!route.isMutation)
            #expect(route.allowedMethods == ["GET", "HEAD"])
        }
    }

    @Test func mutationRoutes() {
        #expect(resolve("POST", "/reload") == .success(.reload))
        for action in AdminRoute.ServerAction.allCases {
            #expect(resolve("POST", "/services/pg-main/servers/db_1.eu/\(action.rawValue)")
                == .success(.serverAction(service: "pg-main", server: "db_1.eu", action: action)))
        }
        #expect(AdminRoute.reload.isMutation)
        #expect(AdminRoute.serverAction(service: "a", server: "b", action: .drain).allowedMethods == ["POST"])
    }

    @Test func resolveFromParsedRequest() throws {
        var p = HTTPRequestParser()
        guard case .complete(let r) = p.feed(Array("POST /services/pg/servers/db1/disable?x=1 HTTP/1.1\r\n\r\n".utf8)) else {
            Issue.record("did not parse")
            return
        }
        #expect(AdminRoute.resolve(r) == .success(.serverAction(service: "pg", server: "db1", action: .disable)))
    }

    @Test(arguments: [
        "/", "", "*", "/metric", "/metrics/", "//metrics", "/Metrics", "/metrics/x", "/services",
        "/services/pg", "/services/pg/servers/db1", "/services/pg/servers/db1/restart",
        "/services/pg/servers/db1/drain/", "/services/pg/server/db1/drain", "/services//servers/db1/drain",
        "/services/pg/servers/db1/DRAIN", "/services/p%20g/servers/db1/drain", "/services/pg%2Fx/servers/db1/drain",
        "/services/p+g/servers/db1/drain", "/services/pg/servers/d%C3%A9/drain", "/%2Fmetrics",
    ])
    func unknownPathsAre404(_ path: String) {
        #expect(resolve("GET", path) == .failure(.notFound))
        #expect(resolve("POST", path) == .failure(.notFound))
        #expect(resolve("DELETE", path) == .failure(.notFound))
    }

    @Test func wrongMethodIs405WithAllow() throws {
        #expect(resolve("POST", "/metrics") == .failure(.methodNotAllowed(allowed: ["GET", "HEAD"])))
        #expect(resolve("get", "/status") == .failure(.methodNotAllowed(allowed: ["GET", "HEAD"])))
        #expect(resolve("GET", "/reload") == .failure(.methodNotAllowed(allowed: ["POST"])))
        #expect(resolve("PUT", "/services/pg/servers/db1/enable") == .failure(.methodNotAllowed(allowed: ["POST"])))
        let response = AdminRouteError.methodNotAllowed(allowed: ["POST"]).response
        #expect(response.status == .methodNotAllowed)
        #expect(response.headers["allow"] == "POST")
        #expect(AdminRouteError.notFound.response.status == .notFound)
    }

    @Test func segmentsArePercentDecoded() {
        #expect(resolve("GET", "/%6Detrics") == .success(.metrics))
        #expect(resolve("GET", "/%6detrics") == .success(.metrics))
        #expect(resolve("POST", "/%73ervices/pg%2Dmain/servers/db%5F1%2Eeu/dr%61in")
            == .success(.serverAction(service: "pg-main", server: "db_1.eu", action: .drain)))
    }

    @Test(arguments: ["/metrics%", "/metrics%2", "/metrics%zz", "/services/pg%G0/servers/db1/drain"])
    func malformedPercentEncodingIs400(_ path: String) {
        guard case .failure(.badRequest) = resolve("GET", path) else {
            Issue.record("expected 400 for \(path)")
            return
        }
        #expect(AdminRouteError.badRequest("x").response.status == .badRequest)
    }

    @Test func getNeverNeedsAuthorization() {
        let get = HTTPRequest(method: "GET", target: "/metrics")
        #expect(AdminRoute.authorize(request: get, token: nil))
        #expect(AdminRoute.authorize(request: get, token: "s3cret"))
        let head = HTTPRequest(method: "HEAD", target: "/status", headers: ["Authorization": "Bearer wrong"])
        #expect(AdminRoute.authorize(request: head, token: "s3cret"))
    }

    @Test func mutationsAreOpenWithoutAToken() {
        #expect(AdminRoute.authorize(request: post("/reload"), token: nil))
        #expect(AdminRoute.authorize(request: post("/reload", ["Authorization": "Bearer anything"]), token: nil))
    }

    @Test func mutationsNeedTheRightBearerToken() {
        let token = "s3cret-T0ken"
        let ok: [HTTPHeaders] = [
            ["Authorization": "Bearer s3cret-T0ken"],
            ["authorization": "bearer s3cret-T0ken"],
            ["AUTHORIZATION": "BEARER   s3cret-T0ken"],
        ]
        for headers in ok {
            #expect(AdminRoute.authorize(request: post("/reload", headers), token: token), "\(headers)")
        }
        let bad: [HTTPHeaders] = [
            [:],
            ["Authorization": "Bearer"],
            ["Authorization": "Bearer "],
            ["Authorization": "Bearer s3cret-T0ke"],
            ["Authorization": "Bearer s3cret-T0kenX"],
            ["Authorization": "Bearer S3CRET-T0KEN"],
            ["Authorization": "Basic s3cret-T0ken"],
            ["Authorization": "s3cret-T0ken"],
            ["Authorization": "Bearers3cret-T0ken"],
            ["Authorization": "Bearer s3cret-T0ken extra"],
            ["X-Token": "s3cret-T0ken"],
            ["Authorization": "Bearer s3cret-T0ken", "Authorization": "Bearer s3cret-T0ken"],
        ]
        for headers in bad {
            #expect(!AdminRoute.authorize(request: post("/reload", headers), token: token), "\(headers)")
        }
        // Any non-read method counts as a mutation.
        let delete = HTTPRequest(method: "DELETE", target: "/reload")
        #expect(!AdminRoute.authorize(request: delete, token: token))
    }

    @Test func emptyConfiguredTokenFailsClosed() {
        #expect(!AdminRoute.authorize(request: post("/reload", ["Authorization": "Bearer "]), token: ""))
        #expect(!AdminRoute.authorize(request: post("/reload"), token: ""))
    }

    @Test func constantTimeEquals() {
        let eq = AdminRoute.constantTimeEquals
        #expect(eq(Array("abc".utf8), Array("abc".utf8)))
        #expect(!eq(Array("abd".utf8), Array("abc".utf8)))
        #expect(!eq(Array("ab".utf8), Array("abc".utf8)))
        #expect(!eq(Array("abcd".utf8), Array("abc".utf8)))
        #expect(!eq([], Array("abc".utf8)))
        #expect(eq([], []))
        #expect(!eq([0], []))
    }
}
