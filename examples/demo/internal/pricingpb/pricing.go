// Package pricingpb holds the demo.Pricing gRPC service, written by hand in
// the shape protoc-gen-go-grpc would generate (no protoc is needed). Its
// messages are protobuf well-known wrapper types:
//
//	service Pricing {
//	  // GetPrice returns the price of a product, in cents.
//	  rpc GetPrice(google.protobuf.StringValue) returns (google.protobuf.Int64Value);
//	}
//
// The product id travels as a string. Unknown ids fail with codes.NotFound.
package pricingpb

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the fully qualified gRPC service name.
const ServiceName = "demo.Pricing"

// GetPriceMethod is the full method name, as seen by interceptors and on
// the wire (the :path of the HTTP/2 request).
const GetPriceMethod = "/" + ServiceName + "/GetPrice"

// PricingServer is implemented by the pricing service.
type PricingServer interface {
	// GetPrice returns the price in cents of the product whose id is in req.
	GetPrice(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.Int64Value, error)
}

// RegisterPricingServer registers srv on s.
func RegisterPricingServer(s grpc.ServiceRegistrar, srv PricingServer) {
	s.RegisterService(&serviceDesc, srv)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*PricingServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "GetPrice", Handler: getPriceHandler},
	},
	Metadata: "pricing.proto",
}

func getPriceHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(PricingServer).GetPrice(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: GetPriceMethod}
	handler := func(ctx context.Context, req any) (any, error) {
		return srv.(PricingServer).GetPrice(ctx, req.(*wrapperspb.StringValue))
	}
	return interceptor(ctx, in, info, handler)
}

// Client calls demo.Pricing over a gRPC connection.
type Client struct {
	cc grpc.ClientConnInterface
}

// NewClient returns a Client using cc.
func NewClient(cc grpc.ClientConnInterface) *Client {
	return &Client{cc: cc}
}

// GetPrice returns the price in cents of product id. A gRPC status error
// (status.Code) tells why it failed.
func (c *Client) GetPrice(ctx context.Context, id string, opts ...grpc.CallOption) (int64, error) {
	out := new(wrapperspb.Int64Value)
	if err := c.cc.Invoke(ctx, GetPriceMethod, wrapperspb.String(id), out, opts...); err != nil {
		return 0, fmt.Errorf("%s(%q): %w", GetPriceMethod, id, err)
	}
	return out.GetValue(), nil
}
