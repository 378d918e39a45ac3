FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.txt
COPY app.py ./
COPY gateway ./gateway
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir --no-deps -e .
ENV GATEWAY_INSTANCE=/data
EXPOSE 8080
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
